"""Fixtures for the simulated Qubes' own tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from whonix_open.sim.backend import SimBackend
from whonix_open.sim.harness import SimQubes


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimQubes]:
    qubes = SimQubes.create(tmp_path / "qubes")
    yield qubes
    qubes.kill_leftovers()


@pytest.fixture
def backend(sim: SimQubes) -> SimBackend:
    return SimBackend(sim.dir)
