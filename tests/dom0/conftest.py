"""Run the real dom0 service executables as qrexec would: a separate process,
qrexec's environment variables, real pipes, against the simulated Qubes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import DEADLINE
from whonix_open.contract import SERVICE_OPEN
from whonix_open.openinvm import HEADER_SIZE, VIEW_ONLY_PREFIX
from whonix_open.sim.harness import SimQubes

REPO = Path(__file__).resolve().parents[2]
RPC_DIR = REPO / "qubes-rpc"


def header(name: str, view_only: bool = False) -> bytes:
    raw = (VIEW_ONLY_PREFIX if view_only else b"") + name.encode()
    return raw.ljust(HEADER_SIZE, b"\0")




@dataclass
class Result:
    code: int
    out: bytes
    err: str


class Broker:
    """Starts whonix.* service processes for one simulated Qubes."""

    def __init__(self, sim: SimQubes, tmp: Path) -> None:
        self.sim = sim
        self.run_dir = tmp / "run"
        self.config = tmp / "profiles.toml"

    def qubes_env(self) -> dict[str, str]:
        """How the service reaches Qubes (here: the simulated one)."""
        return self.sim.env()

    def env(self, service: str, arg: str, caller: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QREXEC_", "WHONIX_"))}
        env.update(self.qubes_env())
        env.update({
            "QREXEC_REMOTE_DOMAIN": caller,
            "QREXEC_SERVICE_FULL_NAME": f"{service}+{arg}",
            "QREXEC_SERVICE_ARGUMENT": arg,
            "QREXEC_REQUESTED_TARGET_TYPE": "name",
            "QREXEC_REQUESTED_TARGET": "dom0",
            "WHONIX_OPEN_RUN_DIR": str(self.run_dir),
            "WHONIX_OPEN_CONFIG": str(self.config),
        })
        return env

    def start(self, service: str = SERVICE_OPEN, arg: str = "tor", caller: str = "anon-whonix",
              env: dict[str, str] | None = None) -> subprocess.Popen:
        argv = [sys.executable, str(RPC_DIR / service)] + ([arg] if arg else [])
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                env=env if env is not None else self.env(service, arg, caller))

    def start_like_qrexec(self, service: str = SERVICE_OPEN, arg: str = "tor",
                          caller: str = "anon-whonix"):
        """As qrexec-daemon runs a qube's call to a dom0 service
        (run_qrexec_to_dom0 -> libqrexec exec.c do_fork_exec): stdin and stdout
        are each one end of a socketpair, stderr goes to the daemon's log.
        Returns (process, our end of its stdin, our end of its stdout)."""
        stdin_ours, stdin_theirs = socket.socketpair()
        stdout_ours, stdout_theirs = socket.socketpair()
        argv = [sys.executable, str(RPC_DIR / service)] + ([arg] if arg else [])
        try:
            proc = subprocess.Popen(argv, stdin=stdin_theirs, stdout=stdout_theirs,
                                    stderr=subprocess.PIPE,
                                    env=self.env(service, arg, caller))
        finally:
            stdin_theirs.close()
            stdout_theirs.close()
        return proc, stdin_ours, stdout_ours

    def run(self, data: bytes = b"", service: str = SERVICE_OPEN, arg: str = "tor",
            caller: str = "anon-whonix", env: dict[str, str] | None = None) -> Result:
        proc = self.start(service, arg, caller, env)
        out, err = proc.communicate(data, timeout=DEADLINE)
        return Result(proc.returncode, out, err.decode(errors="replace"))

    def open_file(self, name: str = "report.pdf", content: bytes = b"%PDF-1.7 hello\n",
                  view_only: bool = False, **kw) -> Result:
        return self.run(header(name, view_only) + content, **kw)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimQubes]:
    sim = SimQubes.create(tmp_path / "sim")
    yield sim
    sim.kill_leftovers()  # disposable-side processes a test left on purpose


@pytest.fixture
def broker(sim: SimQubes, tmp_path: Path) -> Broker:
    return Broker(sim, tmp_path)
