"""An unexpected exception in the real `whonix-open` is never silent, from any
entry point: the command line, the Nautilus extension's launch (stdout and
stderr go to /dev/null there) and the Exec line of every installed desktop file.

The breakage is a real one: a broken `xdg` module (pyxdg is what the config
loader imports) or a missing one, first on PYTHONPATH. The CLI must then write
one clear line on stderr, send a notification, and keep the traceback in
$XDG_STATE_HOME/whonix-open/error.log; no exception repr reaches the user.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from desktop_gui import REPO
from test_desktop_nautilus_ext import load_extension

from tests.helpers import DEADLINE, isolated_env, wait_for

BROKEN = {
    "crash": 'raise RuntimeError("boom <internal state 0x7f>")\n',
    "missing": 'raise ModuleNotFoundError("No module named \'xdg\'", name="xdg")\n',
}


class World:
    """PATH with the real CLI as `whonix-open` and a recording notify-send."""

    def __init__(self, root: Path, broken: str):
        self.root = root
        self.broken = broken
        bin_dir = root / "bin"
        shadow = root / "shadow/xdg"
        for d in (bin_dir, shadow):
            d.mkdir(parents=True)
        (shadow / "__init__.py").write_text(BROKEN[broken])
        self.notify_log = root / "notify.log"
        self.cli = bin_dir / "whonix-open"
        self.cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m whonix_open.vm.cli "$@"\n')
        (bin_dir / "notify-send").write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            "with open(os.environ['NOTIFY_LOG'], 'a') as fh:\n"
            "    fh.write(json.dumps(sys.argv[1:]) + chr(10))\n")
        for script in bin_dir.iterdir():
            script.chmod(0o755)
        self.env = isolated_env(
            root, PATH=f"{bin_dir}:/usr/bin:/bin", NOTIFY_LOG=str(self.notify_log),
            PYTHONPATH=str(root / "shadow"), XDG_STATE_HOME=str(root / "state"),
            PYTHONDONTWRITEBYTECODE="1")
        self.doc = root / "report.pdf"
        self.doc.write_bytes(b"%PDF-1.4\n")
        self.log = root / "state/whonix-open/error.log"

    def notifications(self) -> list[list[str]]:
        if not self.notify_log.exists():
            return []
        return [json.loads(line) for line in self.notify_log.read_text().splitlines()]

    def wait_notification(self) -> list[str]:
        return wait_for(lambda: self.notifications() and self.log.exists()
                        and self.notifications()[-1], "the error notification")


def assert_reported(world: World, note: list[str]) -> None:
    summary, body = note[-2:]
    assert summary == "whonix-open: error"
    assert "boom" not in body and "Error(" not in body and "Traceback" not in body
    if world.broken == "missing":
        assert "python3-xdg" in body and "pyxdg" in body
    else:
        assert "unexpected internal error" in body
    assert str(world.log) in body
    assert "Traceback" in world.log.read_text()


@pytest.fixture(params=sorted(BROKEN))
def world(request, tmp_path: Path) -> World:
    return World(tmp_path, request.param)


def test_cli(world: World):
    r = subprocess.run([str(world.cli), "--", str(world.doc)], env=world.env,
                       capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("whonix-open: error: "), r.stderr
    assert "boom" not in r.stderr and "Traceback" not in r.stderr
    assert_reported(world, world.wait_notification())
    assert world.doc.read_bytes() == b"%PDF-1.4\n"


def test_cli_without_a_log_file_prints_the_traceback_after_the_line(world: World):
    (world.root / "state").write_text("not a directory")
    r = subprocess.run([str(world.cli), "--no-notify", "--", str(world.doc)], env=world.env,
                       capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert r.returncode == 1
    first, *rest = r.stderr.splitlines()
    assert first.startswith("whonix-open: error: ") and "Details" not in first
    assert rest[0].startswith("Traceback")
    assert world.notifications() == []


def test_nautilus_launch(world: World, monkeypatch):
    module, _ = load_extension(monkeypatch)
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    argv = module.command(module.ENTRIES[0][3], [str(world.doc)])
    assert argv[0] == str(world.cli)
    module.launch(argv)  # detached, output to /dev/null: only the notification tells
    note = world.wait_notification()
    assert_reported(world, note)


def exec_lines(destdir: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    """(file, Exec) of every installed desktop file that runs whonix-open, and
    the commands of the Thunar actions the merge tool writes for a user."""
    subprocess.run([sys.executable, str(destdir / "usr/bin/whonix-open-thunar-actions")],
                   env=env, check=True, capture_output=True)
    uca = ET.parse(Path(env["XDG_CONFIG_HOME"]) / "Thunar/uca.xml").getroot()  # noqa: S314
    found = [("uca.xml", a.findtext("command")) for a in uca
             if a.findtext("unique-id", "").startswith("whonix-open-")
             and a.findtext("command").split(" ")[0] == "whonix-open"]
    for path in sorted(destdir.rglob("*.desktop")):
        entry = configparser.ConfigParser(interpolation=None, strict=False)
        entry.optionxform = str
        entry.read(path, encoding="utf-8")
        for section in entry.sections():
            value = entry[section].get("Exec", "")
            if value.split(" ")[0] == "whonix-open":
                found.append((path.name, value))
    return found


def test_desktop_files_exec(world: World, tmp_path: Path):
    dest = tmp_path / "destdir"
    subprocess.run(["make", "-s", "-C", str(REPO), "install-vm-desktop", f"DESTDIR={dest}"],
                   check=True, capture_output=True)
    lines = exec_lines(dest, world.env)
    # Thunar x4, MIME x2, PCManFM-Qt x4, Dolphin KF6 + KF5 x4 each
    assert len(lines) == 18, lines
    for number, (name, value) in enumerate(lines, start=1):
        argv = [str(world.doc) if a == "%F" else a for a in shlex.split(value)]
        subprocess.run(argv, env=world.env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=DEADLINE, check=False)
        notes = wait_for(lambda n=number: len(world.notifications()) >= n
                         and world.notifications(), f"a notification from {name}")
        assert len(notes) == number, name
        assert_reported(world, notes[-1])


def test_gio_launch_of_the_mime_handler(world: World, tmp_path: Path):
    """The "Open With" handler started by GIO itself, as a mail client does."""
    dest = tmp_path / "destdir"
    subprocess.run(["make", "-s", "-C", str(REPO), "install-vm-desktop", f"DESTDIR={dest}"],
                   check=True, capture_output=True)
    handler = dest / "usr/share/applications/whonix-open-view.desktop"
    subprocess.run(["gio", "launch", str(handler), str(world.doc)], env=world.env,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=DEADLINE, check=True)
    note = world.wait_notification()
    assert_reported(world, note)
