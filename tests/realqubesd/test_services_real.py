"""The dom0 services end to end through the REAL qubesd of this venv's
release: files (tor, offline, view), links, apps, whonix.RoutingStatus, the
cleanup paths (signals, a vanished caller, a SIGKILLed service), the Admin API
calls per open counted at the socket, and preloads (R4.3 and later)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.dom0.conftest import REPO, header
from tests.dom0.test_open_service import audit_line, finish
from tests.helpers import DOM0_STATUS_WHONIX, wait_for
from tests.real.test_real_calls import OFFLINE, TOR, _shape
from tests.realqubesd.harness import DVM, has_preloads
from whonix_open.contract import (
    SERVICE_APP,
    SERVICE_OPEN,
    SERVICE_STATUS,
    SERVICE_URL,
    SERVICE_VIEW,
    Exit,
)
from whonix_open.dom0.disposable import CONTAINED_TAG

URL = b"https://www.whonix.org/wiki/Qubes\n"


def launched(qubesd) -> list[dict]:
    from whonix_open.sim.state import SimState

    return SimState(qubesd.side).read().get("launched", [])


def test_offline_disposable_has_no_netvm_and_is_removed(broker, real_qubesd):
    r = broker.open_file(arg="offline")
    assert r.code == Exit.OK, r.err
    (service,) = real_qubesd.services()
    assert (service["netvm"], service["default_dispvm"]) == (None, None)
    assert "network=offline" in audit_line(r.err)
    assert real_qubesd.disposables() == []  # Create.DispVM + auto_cleanup set by us


def test_view_only_returns_nothing(broker, real_qubesd):
    r = broker.open_file("photo.jpg", b"\xff\xd8jpeg", view_only=True, service=SERVICE_VIEW)
    assert r.code == Exit.OK and r.out == b"", r.err
    (got,) = real_qubesd.received()
    assert got["view_only"] and got["replied"]
    assert real_qubesd.disposables() == []


def test_a_link_and_an_app_open_in_tor_disposables(broker, real_qubesd):
    r = broker.run(URL, service=SERVICE_URL, arg="tor")
    assert r.code == Exit.OK and r.out == b"", r.err
    r = broker.run(b"\n", service=SERVICE_APP, arg="torbrowser+tor")
    assert r.code == Exit.OK, r.err
    kinds = [(e["kind"], e.get("url") or e.get("app")) for e in launched(real_qubesd)]
    assert kinds == [("url", URL.decode().strip()), ("app", "janondisttorbrowser.desktop")]
    assert [s["netvm"] for s in real_qubesd.services()] == ["sys-whonix", "sys-whonix"]
    assert real_qubesd.disposables() == []


def test_routing_status_reads_the_real_qubesd(broker, real_qubesd):
    r = broker.run(b"", service=SERVICE_STATUS, arg="")
    assert r.code == Exit.OK, r.err
    status = json.loads(r.out)
    assert {k: status[k] for k in DOM0_STATUS_WHONIX} == DOM0_STATUS_WHONIX
    r = broker.run(b"", service=SERVICE_STATUS, arg="", caller="personal")
    assert r.code == Exit.OK, r.err
    assert json.loads(r.out)["netvm_is_whonix_gateway"] is False


def _hanging(broker, real_qubesd, **kw):
    real_qubesd.set_behaviour("hang")
    proc = broker.start(**kw)
    proc.stdin.write(header("big.iso") + b"data")
    proc.stdin.close()
    wait_for(lambda: real_qubesd.received(), "the file to arrive in the disposable")
    (service,) = real_qubesd.services()
    assert real_qubesd.qubes()[service["qube"]]["state"] == "Running"
    return proc, service["qube"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_relay_kills_the_disposable(broker, real_qubesd, sig):
    proc, _name = _hanging(broker, real_qubesd)
    proc.send_signal(sig)
    err = finish(proc)
    assert proc.returncode == Exit.INTERNAL, err
    assert real_qubesd.disposables() == []


def test_a_vanished_caller_kills_the_disposable(broker, real_qubesd):
    proc, _name = _hanging(broker, real_qubesd)
    proc.stdout.close()
    proc.wait(timeout=60)
    assert real_qubesd.disposables() == []


def test_a_sigkilled_service_leaves_a_record_the_admin_reap_cleans(broker, real_qubesd):
    proc, name = _hanging(broker, real_qubesd)
    proc.kill()
    proc.wait()
    assert name in real_qubesd.disposables()  # nothing could clean up
    assert CONTAINED_TAG in real_qubesd.expect_ok("admin.vm.tag.List", name).split()
    real_qubesd.set_behaviour("edit")
    r = broker.open_file()  # the next request reaps the stale session first
    assert r.code == Exit.OK, r.err
    assert f"removing {name}" in r.err
    assert real_qubesd.disposables() == []


@pytest.mark.parametrize("profile, expected", [("tor", TOR), ("offline", OFFLINE)])
def test_calls_per_open_at_the_real_socket(broker, real_qubesd, profile, expected):
    """docs/DEVELOPING.md's call table, counted at the REAL qubesd's socket."""
    with real_qubesd.counting() as proxy:
        env = broker.env(SERVICE_OPEN, profile, "anon-whonix")
        env["WHONIX_OPEN_QUBESD_SOCKET"] = proxy.path
        r = broker.open_file(arg=profile, env=env)
        assert r.code == Exit.OK, r.err
        (service,) = real_qubesd.services()
        assert _shape(list(proxy.calls), "anon-whonix", service["qube"]) == expected


if has_preloads():  # R4.3 and later (qubes/vm/mix/dvmtemplate.py)
    @pytest.fixture
    def preloads(real_qubesd):
        real_qubesd.set_feature("dom0", "preload-dispvm-delay", "3600")  # refill on our word
        real_qubesd.set_feature(DVM, "preload-dispvm-max", "1")
        return real_qubesd.wait_until(lambda: [p for p in real_qubesd.preloads()
                                               if real_qubesd.qubes()[p]["state"] == "Paused"],
                                      "a paused preload")

    def test_tor_open_takes_the_preload_without_starting_it(broker, real_qubesd, preloads):
        (ready,) = preloads
        with real_qubesd.counting() as proxy:
            env = broker.env(SERVICE_OPEN, "tor", "anon-whonix")
            env["WHONIX_OPEN_QUBESD_SOCKET"] = proxy.path
            r = broker.open_file(env=env)
            assert r.code == Exit.OK, r.err
            (service,) = real_qubesd.services()
            assert service["qube"] == ready and service["netvm"] == "sys-whonix"
            # a preload runs: no Start, but its deferred netvm is checked
            assert _shape(list(proxy.calls), "anon-whonix", ready) == \
                [*TOR[:10], ("admin.vm.feature.Get", "disp"), TOR[11]]
        assert ready not in real_qubesd.qubes()

    def test_offline_never_takes_a_tor_preload(broker, real_qubesd, preloads):
        r = broker.open_file(arg="offline")
        assert r.code == Exit.OK, r.err
        (service,) = real_qubesd.services()
        assert service["qube"] not in preloads and service["netvm"] is None
        assert real_qubesd.preloads() == preloads  # untouched
else:  # R4.2: no preloads; the feature is just a feature
    def test_r42_makes_no_preloads_and_every_open_starts_its_disposable(broker, real_qubesd):
        real_qubesd.set_feature(DVM, "preload-dispvm-max", "2")
        assert real_qubesd.disposables() == []
        r = broker.open_file()
        assert r.code == Exit.OK, r.err
        assert real_qubesd.preloads() == [] and real_qubesd.disposables() == []


def test_the_admin_tool_checks_sees_and_reaps_through_the_real_qubesd(broker, real_qubesd,
                                                                     tmp_path):
    import subprocess
    import sys

    policy = tmp_path / "policy.d"  # ours next to upstream's own dom0 files
    policy.mkdir()
    for f in (REPO / "policy").glob("*.policy"):
        (policy / f.name).write_text(f.read_text())
    for name in ("80-whonix.policy", "90-default.policy"):
        (policy / name).write_text((REPO / "tests" / "policy" / "fixtures" / name).read_text())
    env = {**os.environ, **broker.env(SERVICE_OPEN, "tor", "anon-whonix")}

    def admin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "packaging" / "whonix-open-admin"),
                               *args], env=env, capture_output=True, text=True, timeout=120)

    check = admin("check", "--policy-dir", str(policy))
    assert check.returncode == 0 and " 0 FAIL" in check.stdout, check.stdout + check.stderr
    proc, name = _hanging(broker, real_qubesd)
    proc.kill()
    proc.wait()
    status = admin("status", "--all", "--json")  # the service is dead: its session is stale
    assert status.returncode == 0 and name in status.stdout, status.stderr
    assert '"stale"' in status.stdout
    check = admin("check", "--policy-dir", str(policy))
    assert check.returncode != 0 and name in check.stdout  # the orphan
    reap = admin("reap")
    assert reap.returncode == 0, reap.stderr
    assert name not in real_qubesd.qubes()
    check = admin("check", "--policy-dir", str(policy))
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_netvm_change_while_open_is_71_over_real_admin_events(broker, real_qubesd):
    """The watchdog hears the REAL qubesd's property-set:netvm (admin.Events)."""
    proc, name = _hanging(broker, real_qubesd)
    real_qubesd.set_prop(name, "netvm", "sys-firewall")  # someone switches it to clearnet
    err = finish(proc)
    assert proc.returncode == Exit.NETVM_CHANGED, err
    assert real_qubesd.disposables() == []


def test_per_qube_limit_is_68_and_frees_up(broker, real_qubesd):
    broker.config.write_text("[limits]\nper_qube = 2\n")
    real_qubesd.set_behaviour("hang")
    procs = []
    for i in range(2):
        proc = broker.start()
        proc.stdin.write(header(f"f{i}.txt") + b"data")
        proc.stdin.close()
        procs.append(proc)
    wait_for(lambda: len(real_qubesd.received()) == 2, "two files open")
    r = broker.open_file()
    assert r.code == Exit.TOO_MANY, r.err
    assert len(real_qubesd.disposables()) == 2
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    real_qubesd.set_behaviour("edit")
    assert broker.open_file().code == Exit.OK
    assert real_qubesd.disposables() == []


def test_a_disposable_of_this_service_cannot_call_it(broker, real_qubesd):
    proc, name = _hanging(broker, real_qubesd)
    r = broker.open_file(caller=name)
    assert r.code == Exit.LOOP, r.err
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert real_qubesd.disposables() == []
