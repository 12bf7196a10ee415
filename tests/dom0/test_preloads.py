"""R4.3 preloaded disposables and the two ways to a disposable (DESIGN.md,
"Preloaded disposables"), through the real service executable. The same
tests run against the real qubesadmin library in tests/real/."""

from __future__ import annotations

import pytest

from whonix_open.contract import Exit

DVM = "whonix-workstation-18-dvm"
GW2 = "sys-whonix-2"
PROFILES = {"tor": "tor", "offline": "offline", "tor-2": "tor-2"}


@pytest.fixture
def preloading(sim, broker):
    """-> set(n): the DVM keeps n preloads ready (refilled only on demand of
    the test: a long refill delay) and a second gateway + profile exist."""
    sim.add_qube(GW2, klass="AppVM", template="whonix-gateway-18", netvm="sys-firewall",
                 provides_network=True, power_state="Running", tags=["anon-gateway"])
    broker.config.write_text(f"[profiles.tor-2]\nnetwork = 'tor'\ngateway = '{GW2}'\n")
    sim.set_feature("dom0", "preload-dispvm-delay", "3600")

    def set_preloads(n: int) -> list[str]:
        sim.set_feature(DVM, "preload-dispvm-max", str(n))
        sim.settle()
        ready = sim.preloads(DVM)
        assert len(ready) == n
        return ready
    return set_preloads


def _relayed(sim) -> dict:
    (service,) = [s for s in sim.services() if s["service"] == "qubes.OpenInVM"]
    return service


@pytest.mark.parametrize("n", [0, 1, 5])
@pytest.mark.parametrize("profile", ["offline", "tor-2"])
def test_a_profile_the_dvm_does_not_fit_never_touches_the_queue(broker, sim, preloading,
                                                                 profile, n):
    ready = preloading(n)
    r = broker.open_file(arg=PROFILES[profile])
    assert r.code == Exit.OK, r.err
    service = _relayed(sim)
    assert service["qube"] not in ready
    # booted on the profile's network from the start, never on another one
    booted = [c for c in sim.calls() if c["method"] == "admin.vm.Start"]
    assert [c["dest"] for c in booted] == [service["qube"]]
    assert service["netvm"] == (None if profile == "offline" else GW2)
    assert sim.preloads(DVM) == ready  # the queue is untouched
    assert all(sim.qube(p)["power_state"] == "Paused" for p in ready)
    assert "admin.vm.CreateDisposable" not in [c["method"] for c in sim.calls()]
    assert sim.disposables() == sorted(ready)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_tor_on_the_dvms_own_gateway_takes_one_preload_at_most(broker, sim, preloading, n):
    ready = preloading(n)
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    service = _relayed(sim)
    starts = [c["dest"] for c in sim.calls() if c["method"] == "admin.vm.Start"]
    if n:
        assert service["qube"] == ready[0] and starts == []  # the fast path: no boot
        assert sim.preloads(DVM) == ready[1:]
    else:
        assert starts == [service["qube"]] and sim.preloads(DVM) == []
    assert service["netvm"] == "sys-whonix" and service["default_dispvm"] is None
    kills = [c["dest"] for c in sim.calls() if c["method"] == "admin.vm.Kill"]
    assert kills == [service["qube"]]  # at most the one it was handed
    assert sim.disposables() == sorted(ready[1:])


def test_the_queue_is_refilled_by_qubesd_not_by_us(broker, sim, preloading):
    ready = preloading(2)
    sim.set_feature("dom0", "preload-dispvm-delay", "0")
    assert broker.open_file().code == Exit.OK
    sim.settle()
    now = sim.preloads(DVM)
    assert len(now) == 2 and now[0] == ready[1] and now[1] not in ready


def test_a_preload_whose_dvm_changed_is_discarded_by_qubesd(broker, sim, preloading):
    ready = preloading(2)
    sim.set_property(DVM, "netvm", GW2)  # qubesd: outdated preloads are cleaned up
    assert sim.preloads(DVM) == [] and not set(ready) & set(sim.disposables())
    r = broker.open_file(arg="tor-2")  # now the DVM's own gateway: the fast path
    assert r.code == Exit.OK, r.err
    assert _relayed(sim)["netvm"] == GW2


def test_offline_uses_preloads_of_an_offline_dvm(broker, sim, preloading):
    sim.set_property(DVM, "netvm", None)
    ready = preloading(2)
    r = broker.open_file(arg="offline")
    assert r.code == Exit.OK, r.err
    service = _relayed(sim)
    assert service["qube"] == ready[0] and service["netvm"] is None
    assert sim.qube(ready[1])["booted_with"]["netvm"] is None


@pytest.mark.parametrize("preloads", [0, 2])
@pytest.mark.parametrize("profile", ["tor", "offline"])
def test_a_default_dispvm_that_does_not_read_back_as_none_is_70(broker, sim, preloading,
                                                                profile, preloads):
    ready = preloading(preloads)
    sim.set_fault("default_dispvm_set_ignored", True)
    r = broker.open_file(arg=PROFILES[profile])
    assert r.code == Exit.VERIFICATION_FAILED, r.err
    assert "default_dispvm" in r.err
    assert sim.received() == [] and sim.services() == []
    assert sim.disposables() == sorted(ready[1:] if profile == "tor" else ready)


@pytest.mark.parametrize("profile", ["tor", "offline"])
def test_a_caller_whose_default_dispvm_is_not_whonix_opens(broker, sim, profile):
    """personal's default_dispvm is a Debian DVM: dom0 finds the Whonix one
    itself (admin.vm.List on dom0, which lists every qube)."""
    r = broker.open_file(caller="personal", arg=PROFILES[profile])
    assert r.code == Exit.OK, r.err
    assert _relayed(sim)["netvm"] == (None if profile == "offline" else "sys-whonix")
    assert f"dvm={DVM}" in r.err


@pytest.mark.parametrize("fault, value", [("create_fails", True), ("start_fails", True)])
@pytest.mark.parametrize("keeps", [True, False])
def test_create_dispvm_failures_leave_nothing(broker, sim, preloading, fault, value, keeps):
    """Create.DispVM (offline from a networked DVM): a refused create is tried
    at most three times; a DispVM that would not start is removed (it had
    auto_cleanup set, but a failed start need not remove it)."""
    ready = preloading(2)
    sim.set_fault(fault, value)
    sim.set_fault("start_fails_keeps_qube", keeps)
    r = broker.open_file(arg="offline")
    assert r.code == Exit.DISPOSABLE_FAILED, r.err
    creates = [c for c in sim.calls() if c["method"] == "admin.vm.Create.DispVM"]
    assert 1 <= len(creates) <= 3
    assert sim.disposables() == sorted(ready) and sim.preloads(DVM) == ready


def test_a_taken_create_dispvm_name_is_retried(sim, monkeypatch):
    """Create.DispVM needs a name of our own; a taken one is tried again
    (narrow seam: the random name)."""
    from whonix_open.dom0 import disposable
    from whonix_open.dom0.resolve import Plan
    from whonix_open.sim.backend import SimBackend

    sim.add_qube("whonix-open-disp7", klass="AppVM", template="debian-13")
    names = iter(["whonix-open-disp7", "whonix-open-disp8"])
    monkeypatch.setattr(disposable, "_new_name", lambda: next(names))
    created = []
    plan = Plan(profile="offline", dvm=DVM, gateway=None)
    name = disposable.provision(SimBackend(sim.dir), plan, "s1", created.append)
    assert name == created[0] == "whonix-open-disp8"
    assert sim.qube("whonix-open-disp7")["klass"] == "AppVM"  # the other one untouched
    assert sim.qube(name)["netvm"] is None and sim.qube(name)["auto_cleanup"] is True


def test_a_preload_whose_netvm_change_is_deferred_is_refused(broker, sim, preloading):
    """Issue 15 (4): on R4.3 a netvm set on a paused preload is deferred
    (feature deferred-netvm-original) and, while the new netvm is halted,
    stays deferred when the preload is handed out (qubes-core-admin
    qubes/vm/mix/net.py apply_deferred_netvm): its `netvm` names the gateway,
    its network device is still the old one's. The broker refuses (67) and
    destroys it; nothing reaches it."""
    ready = preloading(2)
    for name in ready:
        sim.set_feature(name, "deferred-netvm-original", "sys-firewall")
    sim.set_property("sys-whonix", "power_state", "Halted")
    r = broker.open_file()
    assert r.code == Exit.NETWORK_REFUSED, r.err
    assert "deferred-netvm-original" in r.err and "sys-firewall" in r.err
    assert not [s for s in sim.services() if s["service"] == "qubes.OpenInVM"]
    assert len(set(ready) - set(sim.disposables())) == 1  # the one handed out is gone


def test_a_deferred_netvm_that_qubesd_applies_on_use_is_fine(broker, sim, preloading):
    """The same preload while its netvm runs: qubesd applies the change when
    it hands it out (the feature goes), and the open goes ahead."""
    ready = preloading(1)
    sim.set_feature(ready[0], "deferred-netvm-original", "sys-firewall")
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    assert _relayed(sim)["qube"] == ready[0]
