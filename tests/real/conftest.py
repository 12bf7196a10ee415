"""The real-library tier: the dom0 service executables with the real,
unmodified `qubesadmin` (QubesadminBackend, WHONIX_OPEN_BACKEND=qubesadmin)
talking to the qubesd stand-in (sim/qubesd_server.py) on a Unix socket, and
dom0's qrexec-client stand-in (sim/bin/qrexec-client) for the file stream.

qubesadmin and qrexec are not on PyPI: `make venv` installs them from
../shared/upstream (or builds them from the upstream repositories at the same
commits). Without them every test here FAILS, naming what to install."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dom0 import conftest as dom0
from whonix_open.sim.harness import SimQubes
from whonix_open.sim.qubesd_server import QubesdServer

REPO, Broker = dom0.REPO, dom0.Broker
sim = dom0.sim  # the same simulated Qubes fixture

def _missing() -> list[str]:
    missing = []
    for module in ("qubesadmin", "qrexec"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


MISSING = _missing()
INSTALL = ("the real-library tests need the Qubes packages qubesadmin and qrexec: run "
           "`make venv` (it installs ../shared/upstream/qubesadmin-*.whl and qrexec-*.whl, "
           "or builds them from QubesOS/qubes-core-admin-client and qubes-core-qrexec), or "
           ".venv/bin/pip install --no-deps <those wheels>")


@pytest.fixture(autouse=True)
def _real_libraries() -> None:
    if MISSING:
        pytest.fail(f"missing {', '.join(MISSING)}: {INSTALL}", pytrace=False)


class RealBroker(Broker):
    """Broker whose services use the real qubesadmin against the socket."""

    def __init__(self, sim: SimQubes, tmp: Path, qubesd: QubesdServer) -> None:
        super().__init__(sim, tmp)
        self.qubesd = qubesd

    def env(self, service: str, arg: str, caller: str) -> dict[str, str]:
        env = super().env(service, arg, caller)
        env.update({
            "WHONIX_OPEN_BACKEND": "qubesadmin",
            "WHONIX_OPEN_QUBESD_SOCKET": self.qubesd.socket_path,
            "WHONIX_OPEN_QREXEC_CLIENT": str(REPO / "sim" / "bin" / "qrexec-client"),
        })
        return env


@pytest.fixture
def qubesd(sim: SimQubes, tmp_path: Path) -> Iterator[QubesdServer]:
    server = QubesdServer(sim.dir, tmp_path / "qubesd.sock").start()
    yield server
    server.stop()


@pytest.fixture
def broker(sim: SimQubes, tmp_path: Path, qubesd: QubesdServer) -> RealBroker:
    return RealBroker(sim, tmp_path, qubesd)
