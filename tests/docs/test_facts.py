"""Facts the docs state in prose or hand-written tables, checked against the
code (the rest are generated blocks: tests/docs/test_generated.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs import generator

REPO = Path(__file__).resolve().parents[2]
PROSE = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "Makefile",
         REPO / "rpm_spec" / "whonix-open-dom0.spec", REPO / "debian" / "control"]
PACKAGING = [REPO / "setup.py", REPO / "rpm_spec" / "whonix-open-dom0.spec",
             *sorted(p for p in (REPO / "debian").rglob("*") if p.is_file())]


def _blocks():
    generator()
    import blocks

    return blocks


def test_findings_table_names_every_check():
    """docs/ADMIN.md's table of `whonix-open-admin check` findings has a row
    for each name in dom0/admin/findings.py CHECKS, and no other."""
    from whonix_open.dom0.admin.findings import CHECKS

    rows = _blocks().table_after(REPO / "docs" / "ADMIN.md", "**check** resolves every profile")
    documented = [name for row in rows for name in re.findall(r"`([a-z-]+)`", row[0])]
    assert sorted(documented) == sorted(CHECKS)


def test_the_rpm_description_names_every_service():
    spec = (REPO / "rpm_spec" / "whonix-open-dom0.spec").read_text()
    description = spec.split("%description", 1)[1].split("\n%", 1)[0]
    words = set(re.findall(r"whonix\.\w+", description))
    assert words == set(_blocks().service_names())


def test_design_tables_agree_with_the_code():
    """DESIGN.md's services and exit-code tables have exactly the code's rows
    (the generated blocks join them; this names the disagreement directly)."""
    from whonix_open.contract import Exit

    blocks = _blocks()
    assert set(blocks.design_services()) == set(blocks.service_names())
    codes = {int(row[0]) for row in blocks.table_after(blocks.DESIGN,
                                                       "## Exit codes of the dom0 services")}
    assert codes == {int(c) for c in Exit if c < 125}


NUMBER = r"(?:two|three|four|five|six|seven|eight|nine|ten)"
COUNTED = re.compile(rf"\b{NUMBER}\s+(?:[\w-]+\s+)?(?:services|entries|actions)\b", re.I)


@pytest.mark.parametrize("path", PROSE, ids=lambda p: str(p.relative_to(REPO)))
def test_prose_does_not_count_what_the_code_lists(path):
    """"the three qrexec services", "the same three entries": counts in prose
    go stale when a service or entry is added; the lists are generated."""
    assert COUNTED.findall(path.read_text()) == []


def test_package_metadata_claims_no_public_home():
    """No homepage or source URL (there is none yet) and no placeholder
    address; the maintainer is the one clearly invalid address docs/INSTALL.md
    names, the same everywhere."""
    for path in PACKAGING:
        text = path.read_text(errors="replace")
        for placeholder in ("example.org", "github.com/whonix-open", "@localhost"):
            assert placeholder not in text, f"{path.relative_to(REPO)}: {placeholder}"
    control = (REPO / "debian" / "control").read_text()
    assert not re.search(r"(?m)^Homepage:", control)
    spec = (REPO / "rpm_spec" / "whonix-open-dom0.spec").read_text()
    assert not re.search(r"(?m)^URL:", spec)
    assert not re.search(r"(?m)^Source:", (REPO / "debian" / "copyright").read_text())
    (maintainer,) = re.findall(r"(?m)^Maintainer: (.*)$", control)
    assert maintainer.endswith(".invalid>")
    assert f" -- {maintainer}  " in (REPO / "debian" / "changelog").read_text()
    assert f" {maintainer} - " in spec  # the %changelog line
    assert f"`{maintainer}`" in (REPO / "docs" / "INSTALL.md").read_text()


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-'."""
    heads = re.findall(r"(?m)^#+ (.*)$", re.sub(r"(?ms)^```.*?^```", "", path.read_text()))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("path", [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_links_between_the_pages_resolve(path):
    """After the move into pages, every relative link (and #anchor) still lands."""
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an external address
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        lands = dest.exists() and (not anchor or dest.suffix != ".md"
                                   or anchor in _anchors(dest))
        if not lands:
            broken.append(target)
    assert broken == []


def test_benchmark_call_counts_are_the_tested_call_lists():
    """The call counts in docs/DEVELOPING.md's benchmark table are the lengths
    of the call lists tests/real/test_real_calls.py checks at the socket."""
    from tests.real.test_real_calls import OFFLINE, TOR, TOR_PRELOAD

    rows = _blocks().table_after(REPO / "docs" / "DEVELOPING.md", "`make bench` runs")
    measured = {row[0]: row[1] for row in rows}

    def numbers(prefix: str) -> list[int]:
        (cell,) = [m for what, m in measured.items() if what.startswith(prefix)]
        return [int(n) for n in re.findall(r"(?<![\d.])\d+(?![\d.%])", cell)]

    assert numbers("Admin API calls per open") == [len(TOR)]
    assert numbers("… `tor`, a fitting preload ready") == [len(TOR_PRELOAD)]
    assert numbers("… `offline` (") == [len(OFFLINE)]
    assert numbers("Admin API calls of a link") == [len(TOR)] * 3
    assert numbers("… a terminal vs a file open") == [len(OFFLINE)] * 2


@pytest.mark.parametrize("path", [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_exit_codes_quoted_in_prose_exist(path):
    """"(68)", "(70/67)": a code the prose quotes is one of dom0's."""
    from whonix_open.contract import Exit

    quoted = {int(n) for group in re.findall(r"\((\d\d(?:/\d\d)*)\)", path.read_text())
              for n in group.split("/")}
    assert {n for n in quoted if n >= 64} <= {int(c) for c in Exit}


def _section(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_install_names_every_package_requirement():
    """docs/INSTALL.md names what the RPM requires and what the .deb depends on,
    recommends and suggests (and no other version than the code's)."""
    from whonix_open import __version__

    install = REPO / "docs" / "INSTALL.md"
    spec = (REPO / "rpm_spec" / "whonix-open-dom0.spec").read_text()
    requires = {re.split(r"[\s(]", r.strip())[0]
                for r in re.findall(r"(?m)^Requires:\s*(.*)$", spec)}
    build = _section(install, "## Build the packages (in a qube, never in dom0)")
    assert {r for r in requires if f"`{r}" not in build} == set()
    control = (REPO / "debian" / "control").read_text().split("\nPackage:", 1)[1]
    relations = {name for field in ("Depends", "Recommends", "Suggests")
                 for value in re.findall(rf"(?m)^{field}:\s*(.*)$", control)
                 for name in re.findall(r"(?:^|[,|]\s*)([a-z0-9][a-z0-9.+-]+)", value)}
    templates = _section(install, "## Templates")
    assert {r for r in relations if f"`{r}" not in templates} == set()
    for page in (install, REPO / "README.md"):
        versions = set(re.findall(r"\b\d+\.\d+\.\d+\b", page.read_text()))
        assert versions <= {__version__}, page.name


def test_check_json_example_has_the_schema_of_the_code():
    """docs/ADMIN.md's `check --json` example: the schema version and every
    key of a finding as dom0/admin/findings.py writes them."""
    from whonix_open.dom0.admin.findings import SCHEMA_VERSION, finding

    example = re.search(r"```json\n(.*?)```", (REPO / "docs" / "ADMIN.md").read_text(),
                        re.DOTALL).group(1)
    assert f'"version": {SCHEMA_VERSION}' in example
    keys = finding("orphan", "FAIL", "m").to_json()
    assert [key for key in keys if f'"{key}":' not in example] == []


def test_the_documented_profiles_toml_is_accepted_by_dom0():
    """docs/ADMIN.md's profiles.toml example is one dom0's own parser takes,
    with what it says: a second tor profile, one more app, terminal off."""
    import tomllib

    from whonix_open.dom0.config import parse_config

    admin = _section(REPO / "docs" / "ADMIN.md", "## Profiles (`/etc/whonix-open/profiles.toml`)")
    (example,) = re.findall(r"```toml\n(.*?)```", admin, re.DOTALL)
    config = parse_config(tomllib.loads(example))
    assert config.profiles["tor-2"].gateway == "sys-whonix-2"
    assert "mail" in config.apps and "terminal" not in config.apps


def test_the_documented_user_config_keys_are_the_cli_s():
    """docs/USING.md names exactly the keys vm/config.py accepts, and its
    example values parse."""
    from whonix_open.vm.config import _TYPES, parse

    bullet = _section(REPO / "docs" / "USING.md", "## The `whonix-open` command")
    bullet = bullet[bullet.index("Per-user config"):].split("\n- ", 1)[0]
    settings = re.findall(r"`(\w+ = [^`]+)`", bullet)
    assert sorted(s.split(" = ")[0] for s in settings) == sorted(_TYPES)
    parse("\n".join(settings) + "\n", "docs/USING.md")


def test_the_no_network_example_is_the_cli_s_message():
    """docs/USING.md's exit-79 example prints vm/messages.py's text for
    NO_NEW_NETWORK, and the code it shows is that Exit's."""
    from whonix_open.contract import Exit
    from whonix_open.vm.messages import MESSAGES

    section = _section(REPO / "docs" / "USING.md", "## No network in this qube (79)")
    (example,) = re.findall(r"```\n(\$ whonix-open .*?)```", section, re.DOTALL)
    lines = example.splitlines()
    told = MESSAGES[Exit.NO_NEW_NETWORK].format(profile="the profile 'tor'")
    assert lines[1].endswith(f": {told}")
    assert lines[2:] == ["$ echo $?", str(int(Exit.NO_NEW_NETWORK))]
