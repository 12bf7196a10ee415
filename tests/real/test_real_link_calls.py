"""Admin API calls of a link or app open, counted at the qubesd socket with the
real library: exactly those of a file open of the same profile
(docs/DEVELOPING.md, "Benchmarks")."""

from __future__ import annotations

import pytest

from tests.dom0.test_preloads import DVM
from tests.real.test_real_calls import OFFLINE, TOR, _shape
from whonix_open.contract import SERVICE_APP, SERVICE_URL, Exit


@pytest.mark.parametrize("service, arg, data, expected", [
    (SERVICE_URL, "tor", b"https://www.whonix.org/\n", TOR),
    (SERVICE_APP, "torbrowser+tor", b"\n", TOR),
    (SERVICE_APP, "terminal+offline", b"\n", OFFLINE),
])
def test_calls_at_the_socket_are_a_file_opens(broker, sim, service, arg, data, expected):
    sim.set_feature("dom0", "preload-dispvm-delay", "3600")
    sim.set_feature(DVM, "preload-dispvm-max", "0")
    sim.settle()
    r = broker.run(data, service=service, arg=arg)
    assert r.code == Exit.OK, r.err
    (relayed,) = sim.services()
    assert _shape(list(broker.qubesd.calls), "anon-whonix", relayed["qube"]) == expected
