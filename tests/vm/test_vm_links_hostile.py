"""Links from a hostile page or mail, through the real link handler
(`whonix-open-link`, as the desktop runs it) and the real CLI with a stand-in
qrexec-client-vm: a link is passed as a link, never looked up as a file; the
host is plain; characters that the disposable's qubes-open would read as a
regular expression (it runs `pidwait -A -f "$URL"`) are percent-encoded or,
in the host, refused; the confirmation shows the host first and the whole
link."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEADLINE
from whonix_open.contract import SERVICE_URL
from whonix_open.vm import dialogs
from whonix_open.vm.links import REGEX_CHARS, LinkError, check_link, host_of, shown_whole

BIN = Path(sys.executable).parent  # the installed entry points (make venv)


def handler(world, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(world.env, PATH=f"{world.bin}:{BIN}:/usr/bin:/bin")
    return subprocess.run([str(BIN / "whonix-open-link"), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=DEADLINE, check=False)


def sent_links(world) -> list[str]:
    return [bytes.fromhex(c["header"]).split(b"\n")[0].decode()
            for c in world.calls() if c["argv"][1].startswith(SERVICE_URL)]


@pytest.mark.parametrize("link", ["https://evil.example/a.pdf", "https:/evil.example/a.pdf"])
def test_a_planted_path_never_turns_a_click_into_a_file_open(world, tmp_path, link):
    """The current folder holds `https:/evil.example/a.pdf`, a symlink to a
    private key ("https://..." names the same path). The handler used to let
    whonix-open find it and open the key in edit mode."""
    secret = tmp_path / "id_ed25519"
    secret.write_text("PRIVATE KEY")
    cwd = tmp_path / "Downloads"
    (cwd / "https:" / "evil.example").mkdir(parents=True)
    (cwd / "https:" / "evil.example" / "a.pdf").symlink_to(secret)
    result = handler(world, "--", link, cwd=cwd)
    file_opens = [c for c in world.calls() if not c["argv"][1].startswith(
        (SERVICE_URL, "whonix.RoutingStatus"))]
    assert file_opens == [], "a file was sent"
    if link.startswith("https://"):
        assert result.returncode == 0, result.stderr
        assert sent_links(world) == ["https://evil.example/a.pdf"]
    else:  # one slash: not a link, and never a file either
        assert result.returncode == 2 and "must be followed by //" in result.stderr


def test_the_cli_with_url_never_looks_for_a_file(world, tmp_path):
    (tmp_path / "https:" / "x.org").mkdir(parents=True)
    (tmp_path / "https:" / "x.org" / "f").write_text("file")
    result = world.run("--no-notify", "--url", "--", "https://x.org/f", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sent_links(world) == ["https://x.org/f"]


@pytest.mark.parametrize(("link", "why"), [
    ("https://www.whonix.org@evil.example/", "user name or password before the host"),
    ("https://user:pw@example.org/", "user name or password before the host"),
    ("https://evil%2eexample/", "no percent signs"),
    ("https://[::1]/", "brackets"),
    ("https://ex(ample).org/", "host may only have"),
    ("https://exa*mple.org/", "host may only have"),
])
def test_hostile_authorities_are_refused(world, tmp_path, link, why):
    result = handler(world, "--", link, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "refused link" in result.stderr and why in result.stderr
    assert world.calls() == []


def _pidwait_finds_only_itself(link: str) -> bool:
    """What `pidwait -f LINK` in the disposable does with the link as sent:
    the pattern must match the browser's command line (which holds the link)
    and must not match a command line without it."""
    pattern = re.compile(link)  # ERE and Python agree on these characters
    return bool(pattern.search(f"firefox-esr {link}")) and not pattern.search("firefox-esr")


@pytest.mark.parametrize(("link", "sent"), [
    ("https://en.wikipedia.org/wiki/Tor_(network)", "https://en.wikipedia.org/wiki/Tor_%28network%29"),
    ("https://example.org/a*b", "https://example.org/a%2Ab"),
    ("https://example.org/x?q=[1]&r={2}", "https://example.org/x?q=%5B1%5D&r=%7B2%7D"),
    ("https://example.org/p|q^r$#s(t)", "https://example.org/p%7Cq%5Er%24#s%28t%29"),
])
def test_regex_characters_are_percent_encoded(world, tmp_path, link, sent):
    result = handler(world, "--", link, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sent_links(world) == [sent]
    assert not set(REGEX_CHARS) & set(sent)
    path_part = sent.split("?")[0]
    assert _pidwait_finds_only_itself(path_part)


def test_what_is_sent_has_no_regex_character_but_query_and_fragment_marks():
    for link in ("https://a.org/(x)[y]{z}|*^$", "ftp://f.org/x*", "http://h.org:8080/$"):
        out = check_link(link)
        assert not set(REGEX_CHARS) & set(out), out
    with pytest.raises(LinkError):
        check_link("https://a.org|b.org/")


def test_the_confirmation_shows_the_host_first_and_the_whole_link(tmp_path, monkeypatch):
    """The dialog used to cut the middle of a long link, which can hide the
    real host. Recorded with a stand-in zenity: the argv it would show."""
    log = tmp_path / "zenity.log"
    fake = tmp_path / "zenity"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > "{log}"\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    link = check_link("https://xn--80ak6aa92e.com/" + "very-long-path/" * 20 + "end?x=1")
    assert dialogs.confirm_link(host_of(link), shown_whole(link), program="zenity") is False
    text = next(a for a in log.read_bytes().split(b"\0") if a.startswith(b"--text="))
    text = text.decode()
    assert text.index("Host: xn--80ak6aa92e.com") < text.index("The whole link:")
    assert "xn-- form" in text
    assert text.split("The whole link:\n")[1].split("\n\n")[0].replace("\n", "") == link
