"""End to end: the real whonix-open CLI -> the sim's qrexec-client-vm stand-in
(sim/bin) -> the real dom0 service executables (qubes-rpc/) -> the simulated
Qubes and its disposable, and back. Only the documented interface is used:
`python -m whonix_open.sim init --dir D`, PATH=<repo>/sim/bin:...,
WHONIX_OPEN_BACKEND=sim, WHONIX_OPEN_SIM_DIR, WHONIX_OPEN_SIM_CALLER, and the
sim harness to read (and fault) the simulated state."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, isolated_env, wait_for
from whonix_open.sim.disposable import EDIT_SUFFIX
from whonix_open.sim.harness import SimQubes

REPO = Path(__file__).resolve().parents[2]
SIM_BIN = REPO / "sim" / "bin"
CONTENT = b"Meeting notes\n" * 50


class Chain:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sim_dir = root / "qubes"
        subprocess.run(
            [sys.executable, "-m", "whonix_open.sim", "init", "--dir", str(self.sim_dir)],
            check=True,
            capture_output=True,
            timeout=DEADLINE,
        )
        self.sim = SimQubes(self.sim_dir)
        fake_bin = root / "bin"
        fake_bin.mkdir()
        notify = fake_bin / "notify-send"
        notify.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{root}/notify.log"\n')
        notify.chmod(0o755)
        self.env = isolated_env(
            root,
            PATH=os.pathsep.join([str(SIM_BIN), str(fake_bin), "/usr/bin", "/bin"]),
            WHONIX_OPEN_BACKEND="sim",
            WHONIX_OPEN_SIM_DIR=str(self.sim_dir),
            WHONIX_OPEN_SIM_CALLER="anon-whonix",
            WHONIX_OPEN_PYTHON=sys.executable,
            WHONIX_OPEN_RUN_DIR=str(root / "run"),
            WHONIX_OPEN_CONFIG=str(root / "no-profiles.toml"),
        )

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "whonix_open.vm.cli", *args]

    def run(self, *args: str, caller: str = "anon-whonix") -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args),
            env=dict(self.env, WHONIX_OPEN_SIM_CALLER=caller),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    def audit(self, caller: str = "anon-whonix") -> str:
        log = self.sim_dir / "logs" / f"qrexec.{caller}.log"
        return log.read_text() if log.exists() else ""

    def no_disposables_left(self) -> bool:
        return self.sim.disposables() == []


@pytest.fixture
def chain(tmp_path: Path):
    c = Chain(tmp_path)
    yield c
    c.sim.kill_leftovers()


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_bytes(CONTENT)
    path.chmod(0o604)
    return path


def test_open_edit_comes_back(chain, doc):
    result = chain.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert doc.read_bytes() == CONTENT + EDIT_SUFFIX
    assert stat.S_IMODE(doc.stat().st_mode) == 0o604
    [got] = chain.sim.received()
    assert got["name"] == "notes.txt" and got["view_only"] is False
    assert got["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    assert "warning" not in result.stderr
    wait_for(chain.no_disposables_left, "dom0 to destroy the disposable")


def test_view_only_open(chain, doc):
    before = doc.stat()
    result = chain.run("--no-notify", "--view-only", str(doc))
    assert result.returncode == 0, result.stderr
    assert doc.read_bytes() == CONTENT and doc.stat().st_mtime_ns == before.st_mtime_ns
    [got] = chain.sim.received()
    assert got["view_only"] is True and got["name"] == "notes.txt"
    assert "service=whonix.ViewInDisposable" in chain.audit()


def test_offline_open(chain, doc):
    result = chain.run("--no-notify", "--offline", str(doc))
    assert result.returncode == 0, result.stderr
    assert "profile=offline" in chain.audit() and "network=offline" in chain.audit()
    assert doc.read_bytes() == CONTENT + EDIT_SUFFIX


def test_non_whonix_caller_is_warned_and_still_gets_a_tor_disposable(chain, doc):
    result = chain.run(str(doc), caller="personal")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert "NOT behind a Whonix-Gateway (its netvm is sys-firewall)" in text
    assert "still Tor-routed" in text
    audit = chain.audit("personal")
    assert "exit=0" in audit and "network=offline" not in audit
    notes = (chain.root / "notify.log").read_text()
    assert "warning" in notes and "sys-firewall" in notes


def test_status_from_the_real_dom0_service(chain):
    result = chain.run("--status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verified"] is True and data["qube"] == "anon-whonix"
    assert data["netvm"] == "sys-whonix" and data["behind_whonix_gateway"] is True
    assert "tor" in data["profiles"] and "offline" in data["profiles"]


def test_policy_denied(chain, doc):
    chain.env["WHONIX_OPEN_SIM_DENY"] = "whonix.OpenInDisposable"
    result = chain.run("--no-notify", str(doc))
    assert result.returncode == 126
    assert "policy denied" in result.stderr and "administrator" in result.stderr
    assert doc.read_bytes() == CONTENT


def test_routing_status_denied_falls_back(chain, doc):
    chain.env["WHONIX_OPEN_SIM_DENY"] = "whonix.RoutingStatus"
    result = chain.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert "UNVERIFIED" in result.stderr


def test_unknown_profile(chain, doc):
    result = chain.run("--no-notify", "--profile", "nosuch", str(doc))
    assert result.returncode == 64
    assert "'nosuch'" in result.stderr
    assert doc.read_bytes() == CONTENT


def test_partial_reply_leaves_the_original(chain, doc):
    chain.sim.set_fault("disposable_behaviour", "partial_reply")
    result = chain.run("--no-notify", str(doc))
    assert doc.read_bytes() == CONTENT
    if result.returncode == 0:  # pragma: no cover - would be a broken chain
        pytest.fail(f"a cut reply was reported as success: {result.stderr}")


def test_sigterm_while_open_leaves_the_original(chain, doc):
    chain.sim.set_fault("disposable_behaviour", "hang")
    proc = subprocess.Popen(
        chain.argv("--no-notify", str(doc)),
        env=chain.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(chain.sim.received, "the disposable to receive the file")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert doc.read_bytes() == CONTENT
    wait_for(chain.no_disposables_left, "dom0 to destroy the disposable")
