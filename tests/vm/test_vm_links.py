"""`whonix-open URL...` and `whonix-open --app NAME`: links are checked before
anything is sent (hypothesis at the CLI), and the whole chain works: the real
CLI -> the sim's qrexec-client-vm -> the real dom0 service -> the simulated
disposable's qubes.OpenURL / qubes.StartApp."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DEADLINE, wait_for
from tests.vm.test_e2e_sim import chain  # noqa: F401 - fixture
from whonix_open.contract import Exit
from whonix_open.vm import cli, links
from whonix_open.vm.links import MAX_LENGTH, SCHEMES, check_link

HOSTILE = {
    "javascript:alert(document.cookie)": "scheme javascript: is not allowed",
    "file:///etc/passwd": "scheme file: is not allowed",
    "data:text/html,<script>x</script>": "scheme data: is not allowed",
    "-https://example.org/": "could be taken as an option",
    "--help://x": "could be taken as an option",
    "https://example.org/\nhttps://evil.example/": "control characters",
    "https://example.org/\x1b[31m": "control characters",
    "https://example.org/\x7f": "control characters",
    "https://exa mple.org/": "contains spaces",
    "https://example.org/a\\b": "backslash",
    "https:example.org": "must be followed by //",
    "https:///path": "has no host",
    "https://ex\u00e4mple.org/": "xn-- form",
    "https://example.org/" + "a" * MAX_LENGTH: f"longer than {MAX_LENGTH}",
}


@pytest.mark.parametrize(("link", "why"), HOSTILE.items())
def test_hostile_links_are_refused_before_any_qrexec_call(world, link, why):
    """After `--`, as the scheme handler passes links (Exec=... -- %u)."""
    result = world.run("--no-notify", "--", link)
    assert result.returncode == 2, result.stderr
    assert "refused link" in result.stderr and why in result.stderr
    assert "\x1b" not in result.stderr and "\x00" not in result.stderr
    assert world.calls() == []


def test_an_option_like_link_without_dashes_is_an_unknown_option(world):
    result = world.run("--no-notify", "--https://example.org/")
    assert result.returncode == 2 and world.calls() == []


def test_refusal_shows_the_link_escaped_and_short(world):
    result = world.run("javascript:" + "x" * 500 + "\u202e")
    line = result.stderr.strip().splitlines()[-1]
    assert "refused link javascript:xxx" in line and "xx\\u202e: the scheme" in line
    assert len(line) < links.SHOWN_LENGTH + 100
    assert "\u202e" not in result.stderr


def test_links_and_files_are_not_mixed(world, tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    result = world.run(str(f), "https://example.org/")
    assert result.returncode == 2 and "separate calls" in result.stderr
    assert world.calls() == []


def test_an_existing_file_with_a_colon_is_a_file(tmp_path):
    f = tmp_path / "https:notes.txt"
    f.write_text("x")
    assert not links.looks_like_link(str(f))
    assert links.looks_like_link("https://example.org/")
    assert links.looks_like_link("javascript:alert(1)")


def test_offline_links_are_refused_here(world):
    result = world.run("--offline", "https://example.org/")
    assert result.returncode == 2 and "links need a network" in result.stderr
    assert world.calls() == []


def test_normalisation():
    assert check_link("HTTPS://Example.org/") == "https://Example.org/"
    assert check_link("https://example.org/\u00fcber") == "https://example.org/%C3%BCber"
    assert check_link("ftp://ftp.example.org/x") == "ftp://ftp.example.org/x"


# --- hypothesis at the CLI: nothing hostile is ever sent --------------------

def _would_send(monkeypatch, arg: str) -> tuple[int, list[bytes] | None]:
    sent: list[list[bytes]] = []

    def record(service, lines):  # the seam: the one place a qrexec call starts
        sent.append(lines)
        return [0] * len(lines), None

    monkeypatch.setattr("whonix_open.vm.remote.call_each", record)
    try:
        code = cli.main(["--no-notify", "--quiet", "--", arg])
    except SystemExit as e:
        code = e.code
    return code, (sent[0] if sent else None)


_prefixes = st.sampled_from(["", "http://", "https://", "HTTP://", "ftp://", "javascript:",
                             "file://", "-", "--", "data:", "https:", "https://x.org/"])
_hostile_text = st.text(st.characters(codec="utf-8"), max_size=80)
_long = st.integers(min_value=MAX_LENGTH - 40, max_value=MAX_LENGTH + 40).map(
    lambda n: "https://e.org/" + "a" * n)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arg=st.one_of(st.builds(str.__add__, _prefixes, _hostile_text), _long))
def test_fuzz_only_safe_lines_reach_qrexec(world, monkeypatch, capsys, arg):
    if not links.looks_like_link(arg):
        return  # a file name: the file checks apply (tests/vm/test_vm_cli.py)
    code, sent = _would_send(monkeypatch, arg)
    err = capsys.readouterr().err
    if sent is None:
        assert code == 2 and "refused link" in err, err
        return
    assert code == 0
    (line,) = sent
    text = line.decode("ascii")  # nothing beyond ASCII is sent
    assert text.endswith("\n") and text.count("\n") == 1
    url = text[:-1]
    # What the disposable's qubes.OpenURL accepts, and what `read url` keeps as is.
    assert url.startswith(tuple(f"{s}://" for s in SCHEMES))
    assert re.fullmatch(r"[\x21-\x7e]+", url) and "\\" not in url
    assert len(url) <= MAX_LENGTH


# --- end to end on the simulation -------------------------------------------

def _launched(chain) -> list[dict]:  # noqa: F811
    return chain.sim.snapshot().get("launched", [])


def test_a_link_opens_in_a_checked_tor_disposable(chain):  # noqa: F811
    result = chain.run("--no-notify", "HTTPS://www.whonix.org/wiki/Qubes")
    assert result.returncode == 0, result.stderr
    (got,) = _launched(chain)
    assert got["kind"] == "url" and got["url"] == "https://www.whonix.org/wiki/Qubes"
    audit = chain.audit()
    assert "service=whonix.OpenURLInDisposable profile=tor relay=qubes.OpenURL" in audit
    assert "network=sys-whonix" in audit
    wait_for(chain.no_disposables_left, "dom0 to destroy the disposable")


def test_several_links_each_get_a_disposable(chain):  # noqa: F811
    result = chain.run("--no-notify", "https://a.example/", "https://b.example/")
    assert result.returncode == 0, result.stderr
    assert sorted(x["url"] for x in _launched(chain)) == ["https://a.example/",
                                                         "https://b.example/"]
    assert len({x["qube"] for x in _launched(chain)}) == 2


def test_a_link_from_a_clearnet_qube_still_goes_through_tor(chain):  # noqa: F811
    result = chain.run("--no-notify", "https://example.org/", caller="personal")
    assert result.returncode == 0, result.stderr
    assert "network=sys-whonix" in chain.audit("personal")


def test_a_custom_offline_profile_is_refused_by_dom0_with_76(chain):  # noqa: F811
    (chain.root / "no-profiles.toml").write_text('[profiles.air]\nnetwork = "offline"\n')
    result = chain.run("--no-notify", "--profile", "air", "https://example.org/")
    assert result.returncode == Exit.LINK_NEEDS_NETWORK
    assert "links open only in a profile with a network" in result.stderr
    assert _launched(chain) == []


def test_tor_browser_starts_and_its_disposable_goes_when_it_exits(chain):  # noqa: F811
    result = chain.run("--no-notify", "--app", "torbrowser")
    assert result.returncode == 0, result.stderr
    (got,) = _launched(chain)
    assert got["app"] == "janondisttorbrowser.desktop"
    assert "relay=qubes.StartApp+janondisttorbrowser" in chain.audit()
    wait_for(chain.no_disposables_left, "dom0 to destroy the disposable")


def test_an_app_dom0_does_not_allow_is_77(chain):  # noqa: F811
    result = chain.run("--no-notify", "--app", "xterm")
    assert result.returncode == Exit.APP_NOT_ALLOWED
    assert "not in dom0's allowlist" in result.stderr


def test_a_bad_app_name_is_refused_here(world):
    result = world.run("--app", "Tor Browser")
    assert result.returncode == 2 and "not an app name" in result.stderr
    assert world.calls() == []


def test_stopping_the_cli_closes_the_app_and_its_disposable(chain):  # noqa: F811
    chain.sim.set_fault("disposable_behaviour", "hang")
    proc = subprocess.Popen(chain.argv("--no-notify", "--app", "terminal"), env=chain.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _launched(chain), "the terminal to start")
        assert len(chain.sim.disposables()) == 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    wait_for(chain.no_disposables_left, "dom0 to destroy the disposable")


# --- the CLI's own checks apply to links and apps too -----------------------

def test_loop_guard_refuses_a_link_inside_an_openurl_session(world):
    env = dict(world.env, QREXEC_SERVICE_FULL_NAME="qubes.OpenURL", QREXEC_REMOTE_DOMAIN="dom0")
    result = subprocess.run(world.cli_argv("--no-notify", "https://example.org/"), env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=DEADLINE, check=False)
    assert result.returncode == 3 and "qubes.OpenURL session" in result.stderr
    assert world.calls() == []


def test_require_whonix_gateway_applies_to_apps(world):
    world.write_config("require_whonix_gateway = true\n")
    world.set(status_code=126)  # dom0 cannot tell: not known to be behind a gateway
    result = world.run("--no-notify", "--app", "torbrowser")
    assert result.returncode == 3 and "require_whonix_gateway" in result.stderr
    assert [c["argv"][1] for c in world.calls()] == ["whonix.RoutingStatus"]


def test_the_configured_default_profile_names_the_service(world, monkeypatch):
    world.write_config('default_profile = "tor-2"\n')
    services = []
    monkeypatch.setattr("whonix_open.vm.remote.call_each",
                        lambda service, lines: (services.append(service) or [0], None))
    assert cli.main(["--no-notify", "--quiet", "https://example.org/"]) == 0
    assert cli.main(["--no-notify", "--quiet", "--app", "terminal"]) == 0
    assert services == ["whonix.OpenURLInDisposable+tor-2",
                        "whonix.StartAppInDisposable+terminal+tor-2"]


@pytest.mark.parametrize("code", sorted(int(c) for c in Exit if c != Exit.OK))
def test_every_dom0_code_is_told_in_words_about_links(monkeypatch, capsys, code):
    monkeypatch.setattr("whonix_open.vm.remote.call_each", lambda service, lines: ([code], None))
    assert cli.main(["--no-notify", "https://example.org/"]) == code
    err = capsys.readouterr().err
    said = err.split("https://example.org/: ", 1)[1]
    assert said.strip() and re.search(r"\bfiles?\b", said) is None, said
