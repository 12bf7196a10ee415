"""whonix-open-admin setup / --undo through the REAL qubesd of this venv's
release (and the real qubesadmin): on R4.3 an offline and a tor2 open then
each take a preload; on R4.2 the DVM templates are made without preloads;
--undo gives back every qube, property, feature and tag exactly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.dom0.conftest import REPO
from tests.helpers import DEADLINE
from tests.realqubesd.harness import has_preloads
from whonix_open.contract import SERVICE_OPEN, Exit

GW2, OFFLINE_DVM, TOR2_DVM = "sys-whonix-2", "whonix-ws-18-offline-dvm", "whonix-ws-18-tor2-dvm"
PROFILES = f'# mine\n[profiles.tor2]\nnetwork = "tor"\ngateway = "{GW2}"\n'


def state(qubesd) -> dict:
    """Every qube's properties (GetAll, without the running state), own
    features and tags, as the real qubesd answers them."""
    out = {}
    for name, fields in qubesd.qubes().items():
        props = [line for line in qubesd.expect_ok("admin.vm.property.GetAll", name)
                 .splitlines() if not line.startswith(("xid ", "stubdom_xid ", "start_time "))]
        features = {k: qubesd.feature(name, k)
                    for k in qubesd.expect_ok("admin.vm.feature.List", name).split()}
        out[name] = {"class": fields["class"], "state": fields["state"], "props": props,
                     "features": features,
                     "tags": qubesd.expect_ok("admin.vm.tag.List", name).split()}
    return out


def admin(broker, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **broker.env(SERVICE_OPEN, "tor", "anon-whonix")}
    return subprocess.run([sys.executable, str(REPO / "packaging" / "whonix-open-admin"),
                           *args], env=env, capture_output=True, text=True, timeout=DEADLINE)


@pytest.fixture
def two_gateways(broker, real_qubesd):
    q = real_qubesd
    q.expect_ok("admin.vm.Create.AppVM", "dom0", "whonix-gateway-18",
                f"name={GW2} label=purple".encode())
    q.set_prop(GW2, "provides_network", "True")
    q.set_prop(GW2, "netvm", "sys-firewall")
    q.expect_ok("admin.vm.tag.Set", GW2, "anon-gateway")
    q.expect_ok("admin.vm.Start", GW2)
    q.set_feature("dom0", "preload-dispvm-delay", "0")
    # what a current agent reports (the dev line's preloads wait for the session too)
    q.set_feature("whonix-workstation-18", "supported-rpc.qubes.WaitForSession", "1")
    broker.config.write_text(PROFILES)
    return q


def test_setup_then_opens_and_undo(broker, two_gateways):
    q = two_gateways
    before = state(q)
    dry = admin(broker, "setup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert state(q) == before and broker.config.read_text() == PROFILES
    # The stand-in hypervisor has no qmemman: a qube that pauses (a preload)
    # must not balance memory (harness.py gives the stock DVM maxmem 0 too).
    # So: setup without preloads, maxmem 0, then setup again with them.
    done = admin(broker, "setup", "--preloads", "0")
    assert done.returncode == 0, done.stderr
    assert admin(broker, "setup", "--preloads", "0").stdout.splitlines()[-1] == \
        "nothing to change"
    for dvm, netvm in ((OFFLINE_DVM, ""), (TOR2_DVM, GW2)):
        assert q.prop(dvm, "netvm") == netvm and q.prop(dvm, "template_for_dispvms") == "True"
        q.set_prop(dvm, "maxmem", "0")
    more = admin(broker, "setup", "--preloads", "2")
    assert more.returncode == 0, more.stderr
    if has_preloads():
        assert f"qvm-features {OFFLINE_DVM} preload-dispvm-max 2" in more.stdout
        for profile, dvm in (("offline", OFFLINE_DVM), ("tor2", TOR2_DVM)):
            # Both preloads paused: qubesd may hand out either, and one still
            # booting must not turn into the one the open gets after the wait.
            ready = q.wait_until(lambda d=dvm: (ps := q.preloads(d)) and len(ps) == 2 and all(
                                     q.qubes()[p]["state"] == "Paused" for p in ps) and ps,
                                 f"two paused preloads of {dvm}")
            with q.counting() as proxy:
                env = broker.env(SERVICE_OPEN, profile, "anon-whonix")
                env["WHONIX_OPEN_QUBESD_SOCKET"] = proxy.path
                r = broker.open_file(arg=profile, env=env)
                assert r.code == Exit.OK, r.err
                methods = [m for m, _d, _a in proxy.calls]
            service = q.services()[-1]
            assert service["qube"] in ready and "admin.vm.Start" not in methods
            assert len(methods) <= 12, methods
            q.wait_until(lambda d=dvm: len(q.preloads(d)) == 2, "the refill by qubesd")
    else:
        assert "preloads need Qubes R4.3" in done.stdout
        assert q.preloads(OFFLINE_DVM) == [] and q.feature(OFFLINE_DVM, "preload-dispvm-max") \
            is None
        r = broker.open_file(arg="offline")
        assert r.code == Exit.OK, r.err
        assert q.services()[-1]["netvm"] is None
    undo = admin(broker, "setup", "--undo")
    assert undo.returncode == 0, undo.stderr
    assert state(q) == before and broker.config.read_text() == PROFILES


def test_a_name_taken_by_someone_else_changes_nothing(broker, two_gateways):
    q = two_gateways
    q.expect_ok("admin.vm.Create.AppVM", "dom0", "debian-13",
                f"name={OFFLINE_DVM} label=green".encode())
    before = state(q)
    r = admin(broker, "setup")
    assert r.returncode == 2
    assert f"a qube named {OFFLINE_DVM} already exists and setup did not make it" in r.stderr
    assert state(q) == before and broker.config.read_text() == PROFILES
