"""Which dialog program the link confirmation and the chooser use, and that
none at all means nothing is sent (the GUI itself: tests/desktop/test_desktop_dialogs.py)."""

from __future__ import annotations

import os
import stat

import pytest

from whonix_open.vm import dialogs, handlers


def _bin(tmp_path, *names):
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name in names:
        p = d / name
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(d)


@pytest.mark.parametrize(("desktop", "have", "want"), [
    ("XFCE", ("zenity", "kdialog"), "zenity"),
    ("GNOME", ("zenity", "kdialog"), "zenity"),
    ("KDE", ("zenity", "kdialog"), "kdialog"),
    ("LXQt", ("zenity", "kdialog"), "kdialog"),
    ("ubuntu:GNOME", ("kdialog",), "kdialog"),
    ("LXQt", ("zenity",), "zenity"),
    ("XFCE", (), None),
])
def test_the_desktops_own_toolkit_first(tmp_path, desktop, have, want):
    env = {"XDG_CURRENT_DESKTOP": desktop, "PATH": _bin(tmp_path, *have)}
    assert dialogs.dialog_program(env) == want


def test_without_a_dialog_program_nothing_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _bin(tmp_path))  # empty: no zenity, no kdialog
    monkeypatch.setenv("DISPLAY", ":99")  # a display, so it is the program that is missing
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    ran = []
    monkeypatch.setattr(os, "execvp", lambda *a: ran.append(a))
    assert handlers.link_main(["--confirm", "--", "https://example.org/"]) == 1
    assert handlers.choose_main(["--", str(tmp_path / "a.pdf")]) == 1
    assert ran == []
