"""Fixtures for the VM helper tests: a stand-in qrexec-client-vm (and
notify-send, qubesdb-read) first on PATH, an isolated XDG home, and a way to
run the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, DOM0_STATUS_WHONIX, isolated_env

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin_qrexec.py"





def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@dataclass
class Env:
    """One test's world: its PATH, control file and logs."""

    root: Path
    bin: Path
    env: dict[str, str]
    control: dict[str, object] = field(default_factory=dict)

    def set(self, **control: object) -> None:
        self.control.update(control)
        (self.root / "control.json").write_text(json.dumps(self.control))

    def calls(self) -> list[dict[str, object]]:
        log = self.root / "standin.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def open_calls(self) -> list[dict[str, object]]:
        return [c for c in self.calls() if "header" in c]

    def notifications(self) -> list[list[str]]:
        log = self.root / "notify.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def install_qubesdb(self, values: dict[str, str]) -> None:
        """A stand-in qubesdb-read serving *values* (absent key: exit 1)."""
        db = self.root / "qubesdb"
        db.mkdir(exist_ok=True)
        for key, value in values.items():
            (db / key.strip("/").replace("/", "%")).write_text(value)
        _script(
            self.bin / "qubesdb-read",
            "#!/bin/sh\n"
            f'f="{db}/$(printf %s "$1" | sed "s,^/,,; s,/,%,g")"\n'
            '[ -f "$f" ] || { echo "Failed to read $1" >&2; exit 1; }\n'
            'cat "$f"; echo\n',
        )

    def mark_whonix_workstation(self) -> None:
        marker = self.root / "fsroot/usr/share/anon-ws-base-files/workstation"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("")

    def write_config(self, text: str) -> Path:
        path = Path(self.env["XDG_CONFIG_HOME"]) / "whonix-open" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "whonix_open.vm.cli", *args]

    def run(self, *args: str, timeout: float = DEADLINE, **kw) -> subprocess.CompletedProcess:
        """Run the real CLI; stderr is a pipe, i.e. "not a terminal"."""
        return subprocess.run(
            self.cli_argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )

    def run_unshared(self, setup: str, *args: str) -> subprocess.CompletedProcess:
        """Run the real CLI in a private mount namespace after the shell
        commands *setup* (e.g. mounting a tmpfs with few inodes); its
        children, the stand-in too, share that namespace. As a normal user a
        user namespace gives the mount privilege (unshare --map-root-user)."""
        userns = [] if os.geteuid() == 0 else ["--map-root-user"]
        argv = ["unshare", "--mount", "--propagation", "private", *userns,
                "sh", "-ec", setup + '\nexec "$@"', "sh", *self.cli_argv(*args)]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=DEADLINE, check=False)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.cli_argv(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A stand-in qrexec-client-vm answering like dom0 (default: a Whonix
    qube behind sys-whonix; the disposable sends nothing back: unchanged)."""
    root = tmp_path / "world"
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    _script(
        bin_dir / "qrexec-client-vm",
        f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n',
    )
    _script(
        bin_dir / "notify-send",
        f'#!{sys.executable}\nimport json, os, sys\n'
        'with open(os.environ["NOTIFY_LOG"], "a") as fh:\n'
        "    fh.write(json.dumps(sys.argv[1:]) + chr(10))\n",
    )
    env = isolated_env(
        root,
        PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        STANDIN_CONTROL=str(root / "control.json"),
        STANDIN_LOG=str(root / "standin.log"),
        NOTIFY_LOG=str(root / "notify.log"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    (root / "fsroot").mkdir()
    # The in-process tests see the same world.
    for key in list(os.environ):
        if key.startswith(("QREXEC_", "WHONIX_OPEN_")):
            monkeypatch.delenv(key)
    for key in ("PATH", "STANDIN_CONTROL", "STANDIN_LOG", "NOTIFY_LOG", "WHONIX_OPEN_ROOT",
                "XDG_STATE_HOME"):
        monkeypatch.setenv(key, env[key])
    # pyxdg reads the environment once, at import: point it at the same dirs.
    import xdg.BaseDirectory as xdg_dirs

    monkeypatch.setattr(xdg_dirs, "xdg_config_home", env["XDG_CONFIG_HOME"])
    config_dirs = [env["XDG_CONFIG_HOME"], env["XDG_CONFIG_DIRS"]]
    monkeypatch.setattr(xdg_dirs, "xdg_config_dirs", config_dirs)
    monkeypatch.setattr(xdg_dirs, "xdg_data_home", env["XDG_DATA_HOME"])
    w = Env(root=root, bin=bin_dir, env=env)
    w.set(status_json=DOM0_STATUS_WHONIX, mode="none", exit=0)
    return w
