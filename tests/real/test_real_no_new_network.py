"""The no-new-network rule (exit 79) with the real qubesadmin, counted at the
qubesd socket: a caller without a netvm costs two calls and creates nothing;
opting it in costs exactly one admin.vm.feature.Get more than a file open of
the same profile (docs/DEVELOPING.md, "Benchmarks"; docs/ADMIN.md, "No new
network")."""

from __future__ import annotations

import pytest

from tests.dom0.test_preloads import DVM
from tests.real.test_real_calls import OFFLINE, TOR, TOR_PRELOAD, _shape
from whonix_open.contract import SERVICE_URL, Exit
from whonix_open.dom0.admission import OPT_IN_FEATURE

OPT_IN = ("admin.vm.feature.Get", "caller")


def test_a_caller_without_a_netvm_costs_two_calls_and_no_disposable(broker, sim):
    r = broker.run(b"https://attacker.example/?secret=1\n", service=SERVICE_URL, arg="tor",
                   caller="vault")
    assert r.code == Exit.NO_NEW_NETWORK, r.err
    assert _shape(broker.qubesd.calls, "vault", "-") == [TOR[0], OPT_IN]
    assert sim.disposables() == [] and sim.received() == []


# The opt-in read is one call on top of the open's (12 + 1 with a preload).
@pytest.mark.parametrize("preloads, budget", [(0, 14), (2, 13)])
def test_an_opted_in_caller_pays_one_feature_get(broker, sim, preloads, budget):
    sim.set_feature("dom0", "preload-dispvm-delay", "3600")
    sim.set_feature(DVM, "preload-dispvm-max", str(preloads))
    sim.set_feature("vault", OPT_IN_FEATURE, "1")
    sim.set_property("vault", "default_dispvm", DVM)  # the DVM choice costs what anon-whonix's
    sim.settle()
    r = broker.open_file(arg="tor", caller="vault")
    assert r.code == Exit.OK, r.err
    (service,) = sim.services()
    real = list(broker.qubesd.calls)
    tor = TOR if preloads == 0 else TOR_PRELOAD
    assert _shape(real, "vault", service["qube"]) == [tor[0], OPT_IN, *tor[1:]]
    assert len(real) <= budget


def test_offline_from_a_caller_without_a_netvm_costs_what_it_did(broker, sim):
    sim.set_property("vault", "default_dispvm", DVM)
    r = broker.open_file(arg="offline", caller="vault")
    assert r.code == Exit.OK, r.err
    (service,) = sim.services()
    assert _shape(broker.qubesd.calls, "vault", service["qube"]) == OFFLINE
