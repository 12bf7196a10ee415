"""Issue 15 (4) against the REAL qubesd (R4.3 and later): a netvm set on a
paused preload is deferred (qubes/vm/mix/net.py: feature
deferred-netvm-original) and `apply_deferred_netvm`, run when the preload is
handed out, returns early while the new netvm is halted - so the preload's
`netvm` names the new gateway while it is still wired to the old one. The
broker refuses it (67) and destroys it."""

from __future__ import annotations

from tests.realqubesd.harness import DVM, has_preloads
from whonix_open.contract import Exit

GW2 = "sys-whonix-2"


def _deferred_preload(q) -> str:
    """A preload handed out next whose netvm change to GW2 stays deferred."""
    q.expect_ok("admin.vm.Create.AppVM", "dom0", "whonix-gateway-18",
                f"name={GW2} label=purple".encode())
    q.set_prop(GW2, "provides_network", "True")
    q.set_prop(GW2, "netvm", "sys-firewall")
    q.expect_ok("admin.vm.Start", GW2)
    q.set_feature("dom0", "preload-dispvm-delay", "3600")
    q.set_feature(DVM, "preload-dispvm-max", "1")
    (preload,) = q.wait_until(lambda: [p for p in q.preloads()
                                       if q.qubes()[p]["state"] == "Paused"], "a paused preload")
    # An administrator moves the preload and its DVM template to the second
    # gateway (so the preload is not outdated); the preload is paused: deferred.
    q.set_prop(preload, "netvm", GW2)
    assert q.feature(preload, "deferred-netvm-original") == "sys-whonix"
    q.set_prop(DVM, "netvm", GW2)
    q.expect_ok("admin.vm.Kill", GW2)  # the new gateway goes down before the preload is used
    return preload


if has_preloads():  # R4.3 and later (R4.2: tests/realqubesd/test_services_real.py)
    def test_a_preload_still_wired_to_its_old_netvm_is_refused(broker, real_qubesd):
        preload = _deferred_preload(real_qubesd)
        r = broker.open_file()
        assert r.code == Exit.NETWORK_REFUSED, r.err
        assert "deferred-netvm-original" in r.err and "sys-whonix" in r.err
        assert real_qubesd.services() == []  # nothing was relayed into it
        assert preload not in real_qubesd.qubes()
