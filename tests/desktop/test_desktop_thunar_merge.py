"""whonix-open-thunar-actions: merging into a user's uca.xml, through the command."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from desktop_gui import CHOOSER_ARGV, CHOOSER_LABEL, LABELS, OPTIONS, REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOOL = REPO / "desktop/thunar/whonix-open-thunar-actions"

USER_UCA = """<?xml version="1.0" encoding="UTF-8"?>
<actions>
<!-- my own actions, keep them -->
<action>
\t<icon>utilities-terminal</icon>
\t<name>Open Terminal Here</name>
\t<submenu></submenu>
\t<unique-id>1700000000000000-1</unique-id>
\t<command>exo-open --working-directory %f --launch TerminalEmulator</command>
\t<description>Example for a custom action</description>
\t<range></range>
\t<patterns>*</patterns>
\t<startup-notify/>
\t<directories/>
</action>
<action>
\t<icon>edit-find</icon>
\t<name>Search &amp; replace &lt;here&gt;</name>
\t<name xml:lang="de">Suchen</name>
\t<submenu>Tools</submenu>
\t<unique-id>1700000000000001-2</unique-id>
\t<command>catfish --path=%f</command>
\t<description></description>
\t<range>1-2</range>
\t<patterns>*.txt;*.md</patterns>
\t<text-files/>
</action>
</actions>
"""


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    system = tmp_path / "etc-xdg"
    (system / "Thunar").mkdir(parents=True)
    (system / "Thunar/uca.xml").write_bytes(Path("/etc/xdg/Thunar/uca.xml").read_bytes()
                                            if Path("/etc/xdg/Thunar/uca.xml").exists()
                                            else USER_UCA.encode())
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CONFIG_DIRS": str(system), "PATH": "/usr/bin:/bin"}


def uca(env) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "Thunar/uca.xml"


def actions(path: Path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("action"))  # noqa: S314 - files the test wrote


def canon(action: ET.Element):
    return sorted((c.tag, sorted(c.attrib.items()), (c.text or "").strip()) for c in action)


def ours(path: Path) -> list[ET.Element]:
    return [a for a in actions(path) if a.findtext("unique-id", "").startswith("whonix-open-")]


def theirs(path: Path) -> list:
    return [canon(a) for a in actions(path)
            if not a.findtext("unique-id", "").startswith("whonix-open-")]


def test_new_user_gets_the_system_default_plus_our_entries(env):
    system_actions = [canon(a) for a in actions(Path(env["XDG_CONFIG_DIRS"]) / "Thunar/uca.xml")]
    out = run(env)
    assert out.returncode == 0, out.stderr
    assert theirs(uca(env)) == system_actions
    got = {a.findtext("name"): a.findtext("command") for a in ours(uca(env))}
    assert got == {**{label: " ".join(["whonix-open", *OPTIONS[label], "%F"]) for label in LABELS},
                   CHOOSER_LABEL: " ".join(CHOOSER_ARGV)}
    for action in ours(uca(env)):
        # every kind of file, never a folder (as in the other file managers)
        for condition in ("audio-files", "image-files", "other-files", "text-files",
                          "video-files"):
            assert action.find(condition) is not None
        assert action.find("directories") is None


def test_merge_keeps_user_actions_and_comments_and_is_idempotent(env):
    uca(env).parent.mkdir(parents=True)
    uca(env).write_text(USER_UCA)
    before = theirs(uca(env))
    assert run(env).returncode == 0
    first = uca(env).read_bytes()
    assert theirs(uca(env)) == before
    assert b"<!-- my own actions, keep them -->" in first
    assert first.count(b"<unique-id>whonix-open-") == 5
    stat = uca(env).stat()
    out = run(env)
    assert out.returncode == 0 and "already up to date" in out.stdout
    assert uca(env).read_bytes() == first
    assert uca(env).stat().st_mtime_ns == stat.st_mtime_ns  # not even rewritten


def test_remove_takes_out_exactly_what_was_added(env):
    uca(env).parent.mkdir(parents=True)
    uca(env).write_text(USER_UCA)
    assert run(env).returncode == 0
    assert run(env, "--remove").returncode == 0
    assert ours(uca(env)) == []
    assert theirs(uca(env)) == theirs_from_text(USER_UCA)
    assert b"<!-- my own actions, keep them -->" in uca(env).read_bytes()
    out = run(env, "--remove")
    assert out.returncode == 0 and "no whonix-open actions" in out.stdout


def theirs_from_text(text: str) -> list:
    return [canon(a) for a in ET.fromstring(text).iter("action")]  # noqa: S314 - test data


def test_autostart_respects_a_removal_until_the_user_adds_again(env):
    env = dict(env, PATH=f"{fake_thunar(env)}:/usr/bin:/bin")
    assert run(env, "--autostart").returncode == 0
    assert len(ours(uca(env))) == 5
    assert run(env, "--remove").returncode == 0
    out = run(env, "--autostart")
    assert out.returncode == 0 and "removed by the user" in out.stdout
    assert ours(uca(env)) == []
    assert run(env).returncode == 0  # an explicit add clears the opt-out
    assert run(env, "--autostart", "--quiet").stdout == ""
    assert len(ours(uca(env))) == 5


def fake_thunar(env) -> Path:
    bin_dir = Path(env["HOME"]) / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "thunar").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "thunar").chmod(0o755)
    return bin_dir


def test_autostart_does_nothing_without_thunar(env, tmp_path):
    out = run(dict(env, PATH=str(tmp_path / "empty")), "--autostart")
    assert out.returncode == 0 and "not installed" in out.stdout
    assert not uca(env).exists()


def test_an_outdated_copy_is_updated_in_place_and_duplicates_collapse(env):
    stale = """<action><name>Old name</name><unique-id>whonix-open-open</unique-id>
<command>whonix-open %f</command></action>"""
    text = USER_UCA.replace("<action>\n\t<icon>edit-find", stale + "\n" + stale +
                            "\n<action>\n\t<icon>edit-find")
    uca(env).parent.mkdir(parents=True)
    uca(env).write_text(text)
    assert run(env).returncode == 0
    ids = [a.findtext("unique-id") for a in actions(uca(env))]
    assert ids == ["1700000000000000-1", "whonix-open-open", "whonix-open-view",
                   "whonix-open-view-offline", "whonix-open-convert", "whonix-open-choose",
                   "1700000000000001-2"]
    assert next(a.findtext("command") for a in ours(uca(env))) == "whonix-open -- %F"


@pytest.mark.parametrize("content", [
    b"<actions><action>",                                   # broken XML
    b"<notactions/>",                                       # wrong root
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><actions>&x;</actions>',
])
def test_unreadable_or_hostile_file_is_left_untouched(env, content):
    uca(env).parent.mkdir(parents=True)
    uca(env).write_bytes(content)
    out = run(env)
    assert out.returncode == 1 and "left unchanged" in out.stderr
    assert uca(env).read_bytes() == content


def test_symlinked_file_stays_a_symlink_and_keeps_its_mode(env, tmp_path):
    real = tmp_path / "dotfiles/uca.xml"
    real.parent.mkdir()
    real.write_text(USER_UCA)
    real.chmod(0o600)
    uca(env).parent.mkdir(parents=True)
    uca(env).symlink_to(real)
    assert run(env).returncode == 0
    assert uca(env).is_symlink()
    assert len(ours(real)) == 5
    assert oct(real.stat().st_mode & 0o777) == oct(0o600)


def test_no_system_default_starts_an_empty_file(env, tmp_path):
    env = dict(env, XDG_CONFIG_DIRS=str(tmp_path / "nothing"))
    assert run(env).returncode == 0
    assert [a.findtext("unique-id") for a in actions(uca(env))] == [
        "whonix-open-open", "whonix-open-view", "whonix-open-view-offline", "whonix-open-convert",
        "whonix-open-choose"]


def load_tool():
    loader = importlib.machinery.SourceFileLoader("whonix_open_thunar_actions", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


TOOL_MODULE = load_tool()
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
user_action = st.fixed_dictionaries({
    "name": text, "command": text, "patterns": text,
    "unique-id": st.one_of(st.just(""), st.from_regex(r"[0-9]{6}-[0-9]", fullmatch=True)),
})


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(user_action, max_size=5))
def test_merge_then_remove_gives_back_the_users_actions(tmp_path_factory, user_actions):
    """Any user actions (odd characters included) survive add + remove unchanged."""
    root = ET.Element("actions")
    root.text = "\n"
    for fields in user_actions:
        action = ET.SubElement(root, "action")
        action.tail = "\n"
        for tag, value in fields.items():
            ET.SubElement(action, tag).text = value
    original = ET.tostring(root, encoding="unicode")
    config = tmp_path_factory.mktemp("cfg")
    (config / "Thunar").mkdir()
    (config / "Thunar/uca.xml").write_text(original)
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(config)
    try:
        assert TOOL_MODULE.main(["--quiet"]) == 0
        assert TOOL_MODULE.main(["--quiet"]) == 0
        assert len(ours(config / "Thunar/uca.xml")) == 5
        assert TOOL_MODULE.main(["--remove", "--quiet"]) == 0
    finally:
        if old is None:
            del os.environ["XDG_CONFIG_HOME"]
        else:
            os.environ["XDG_CONFIG_HOME"] = old
    assert theirs(config / "Thunar/uca.xml") == theirs_from_text(original)
