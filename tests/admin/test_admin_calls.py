"""`check`, `status` and `reap` cost Admin API calls linear in the number of
qubes (issue 15, 6: `check` resolved every profile for every caller group
with fresh reads - 212 calls for 12 qubes, 2014 for 48). The systems and
the counting are benchmarks/admin_calls.py's, which prints the figures."""

from __future__ import annotations

import importlib.util

import pytest

from tests.admin.conftest import REPO, require_qrexec


def _bench():
    spec = importlib.util.spec_from_file_location("admin_calls",
                                                  REPO / "benchmarks" / "admin_calls.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("command", ["check", "status", "reap"])
def test_calls_grow_linearly_with_the_qubes(tmp_path, command):
    require_qrexec()
    bench = _bench()
    policy = bench.policy_dir(tmp_path)
    small, large = (bench.measure(n, policy, tmp_path)[command] for n in (12, 48))
    assert small > 0
    assert large / small <= 4.5, (small, large)


def test_check_reads_each_qube_a_bounded_number_of_times(tmp_path):
    """Per qube, not per qube x caller group x profile: at most 12 calls a
    qube on 48 (the inventory's reads plus the profiles' few)."""
    require_qrexec()
    bench = _bench()
    assert bench.measure(48, bench.policy_dir(tmp_path), tmp_path)["check"] <= 12 * 48
