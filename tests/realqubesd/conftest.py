"""The real-qubesd tier: the dom0 service executables with the real
qubesadmin against the REAL qubesd of this venv's Qubes release (harness.py),
only the hypervisor stood in for.

Runs from a release venv: `make test-releases` (or .venv-r4.3/bin/python -m
pytest tests/realqubesd). Where this venv has no qubesd (`qubes`), every test
here FAILS naming the fix: never skipped."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dom0.conftest import Broker
from tests.realqubesd.harness import RealQubesd

MISSING = [m for m in ("qubes", "qubesadmin", "qrexec") if importlib.util.find_spec(m) is None]


@pytest.fixture
def real_qubesd(tmp_path: Path) -> Iterator[RealQubesd]:
    """A started real qubesd on a fresh qubes.xml (harness.py)."""
    if MISSING:
        pytest.fail(f"this venv lacks {', '.join(MISSING)}: the real-qubesd tier runs in a "
                    "release venv (make release-venvs; make test-releases)", pytrace=False)
    qubesd = RealQubesd(tmp_path / "qubesd").start()
    try:
        yield qubesd
    finally:
        qubesd.stop()


class RealBroker(Broker):
    """Starts whonix.* service processes against the real qubesd."""

    def __init__(self, qubesd: RealQubesd, tmp: Path) -> None:
        super().__init__(None, tmp)  # type: ignore[arg-type] - no simulated Qubes
        self.qubesd = qubesd

    def qubes_env(self) -> dict[str, str]:
        return self.qubesd.broker_env()


@pytest.fixture
def broker(real_qubesd: RealQubesd, tmp_path: Path) -> RealBroker:
    return RealBroker(real_qubesd, tmp_path)
