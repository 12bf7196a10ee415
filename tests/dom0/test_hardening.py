"""Issue 7 (dom0 hardening) through the real service executables: slots that
no qube can exhaust, a bounded session lifetime, no disposable before the
caller has shown up, the harmless same-gateway set, and no signal window in
which a disposable escapes both this service and the next request's sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from tests.dom0.conftest import Broker, header
from tests.dom0.test_open_service import CREATE, _hanging_session, finish, methods
from tests.helpers import DEADLINE, wait_for
from whonix_open.contract import SERVICE_OPEN, Exit
from whonix_open.dom0.service import main as service_main

MARKER = "whonix-open-session"


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
        finish(p)


# --- 7.2: no qube, with its disposables, takes every slot ---------------------

def _add_disposable(sim, name: str, created_by: str) -> None:
    sim.add_qube(name, klass="DispVM", template="default-dvm", netvm="sys-firewall",
                 auto_cleanup=True,
                 tags=[f"created-by-{created_by}", f"disp-created-by-{created_by}"])


def test_a_qube_and_its_disposables_cannot_take_every_slot(broker, sim):
    """The review's scenario: one qube holding its sessions open and running
    more from fresh disposables filled the total; now it stops at its own
    slots plus the disposables' shared ones, and another qube still opens."""
    for n in range(101, 105):  # qrexec @dispvm disposables: created-by-dom0
        _add_disposable(sim, f"disp{n}", "dom0")
    _add_disposable(sim, "disp201", "personal")  # personal's own, via the Admin API
    held = [_hanging_session(broker, sim, caller="personal") for _ in range(3)]
    held += [_hanging_session(broker, sim, caller=f"disp{n}") for n in (101, 102, 103)]
    try:
        assert broker.open_file(caller="personal").code == Exit.TOO_MANY
        assert broker.open_file(caller="disp104").code == Exit.TOO_MANY  # shared slots full
        r = broker.open_file(caller="disp201")  # counts against personal
        assert r.code == Exit.TOO_MANY and "personal already has 3" in r.err
        sim.set_fault("disposable_behaviour", "edit")
        r = broker.open_file(caller="anon-whonix")
        assert r.code == Exit.OK, r.err
    finally:
        _stop(held)
    assert sim.disposables() == sorted(["disp101", "disp102", "disp103", "disp104", "disp201"])


def test_a_disposables_creator_is_followed_up_the_chain(broker, sim):
    _add_disposable(sim, "disp301", "personal")
    _add_disposable(sim, "disp302", "disp301")  # created by personal's disposable
    broker.config.write_text("[limits]\nper_qube = 1\n")
    held = [_hanging_session(broker, sim, caller="personal")]
    try:
        r = broker.open_file(caller="disp302")
        assert r.code == Exit.TOO_MANY and "personal already has 1" in r.err
    finally:
        _stop(held)


# --- 7.2: a maximum session lifetime ------------------------------------------

def run_until_lifetime_ends(broker, sim, mocker, monkeypatch, service: str,
                            stream: bytes) -> int:
    """service.main in this process, for a session that started 480 minutes
    minus half a second ago (a narrow seam: the service's clock at the start
    only), so its lifetime ends while the disposable still has the stream.
    Restores the signal handlers main() installs."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    for key, value in broker.env(service, "tor", "anon-whonix").items():
        monkeypatch.setenv(key, value)
    sim.set_fault("disposable_behaviour", "hang")
    clock = mocker.patch("whonix_open.dom0.service.time")
    clock.monotonic.return_value = time.monotonic() - 480 * 60 + 0.5
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, stream)
    os.close(in_w)
    threading.Thread(target=lambda: os.read(out_r, 1 << 20), daemon=True).start()
    try:
        return service_main(service, ["tor"], stdin=in_r, stdout=out_w)
    finally:
        for fd in (in_r, out_w):
            os.close(fd)
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_a_session_past_its_lifetime_is_ended_with_74(broker, sim, mocker, monkeypatch, capfd):
    code = run_until_lifetime_ends(broker, sim, mocker, monkeypatch, SERVICE_OPEN,
                                   header("long.pdf") + b"data")
    assert code == Exit.SESSION_EXPIRED
    assert "reached the session's maximum lifetime" in capfd.readouterr().err
    assert sim.disposables() == []


# --- 7.5: no disposable before the caller has shown up --------------------------

def test_a_caller_that_never_sends_costs_no_disposable(broker, sim):
    broker.config.write_text("[limits]\ncaller_wait_seconds = 1\n")
    proc = broker.start()  # stdin stays open; nothing is written
    try:
        err = finish(proc)
    finally:
        proc.stdin.close()
    assert proc.returncode == Exit.CALLER_SILENT, err
    assert "sent nothing within 1 s" in err
    assert sim.calls() == []  # not even qubesd was asked anything


def test_a_caller_that_hangs_up_first_costs_no_disposable(broker, sim):
    r = broker.run(b"")
    assert r.code == Exit.CALLER_SILENT, r.err
    assert "hung up before sending anything" in r.err
    assert sim.calls() == []


def test_a_caller_over_qrexec_sockets_that_never_sends(broker, sim):
    """Real qrexec-daemon forks the service before the caller's data
    connection exists: a socketpair on which nothing ever arrives."""
    broker.config.write_text("[limits]\ncaller_wait_seconds = 1\n")
    proc, stdin, stdout = broker.start_like_qrexec()
    try:
        err = finish(proc)
    finally:
        stdin.close()
        stdout.close()
    assert proc.returncode == Exit.CALLER_SILENT, err
    assert CREATE not in methods(sim)


# --- 7.5: the same gateway set again ------------------------------------------

def test_the_required_gateway_set_again_is_harmless_another_value_kills(broker, sim):
    proc = _hanging_session(broker, sim)
    (disp,) = sim.disposables()
    sim.set_property(disp, "netvm", "sys-whonix")  # e.g. an admin tool re-applying it
    sim.add_qube("sys-whonix-2", klass="AppVM", template="whonix-gateway-18",
                 netvm="sys-firewall", provides_network=True)
    # A later, real change must still be seen; once it is, the earlier
    # same-value set has demonstrably been let through.
    sim.set_property(disp, "netvm", "sys-whonix-2")
    err = finish(proc)
    assert proc.returncode == Exit.NETVM_CHANGED, err
    assert sim.disposables() == []


def test_offline_treats_any_netvm_event_as_a_change(broker, sim):
    proc = _hanging_session(broker, sim, arg="offline")
    (disp,) = sim.disposables()
    sim.set_property(disp, "netvm", None)  # "none" again: still not vouched for
    err = finish(proc)
    assert proc.returncode == Exit.NETVM_CHANGED, err
    assert sim.disposables() == []


# --- 7.4: signals at each step of create -> record -> mark -> set -> start -----

# (profile, call, when). tor fits the DVM template's own netvm (CreateDisposable);
# offline does not (Create.DispVM: auto_cleanup, tag, marker, then the netvm).
STEPS = [
    ("tor", "admin.vm.CreateDisposable", "after"),  # made; its name is on the way
    ("tor", "admin.vm.tag.Set", "before"),          # recorded, not yet tagged nor marked
    ("tor", "admin.vm.feature.Set", "before"),      # tagged, not yet marked
    ("tor", "admin.vm.property.Set", "before"),     # marked, default_dispvm not yet none
    ("tor", "admin.vm.Start", "before"),            # verified, not yet started
    ("offline", "admin.vm.Create.DispVM", "after"),  # made; its name was recorded before
    ("offline", "admin.vm.property.Set", "before"),  # recorded, auto_cleanup not yet set
    ("offline", "admin.vm.tag.Set", "before"),
    ("offline", "admin.vm.feature.Set", "before"),  # not yet marked
    ("offline", "admin.vm.Start", "before"),
]
# A SIGKILL (nothing in the service runs) leaves the disposable; the next
# request removes it when the record proves it is this service's: once it is
# marked, or - Create.DispVM - by the name recorded before the call.
SIGKILL_PROVEN = [s for s in STEPS if s[2] == "before"
                  and (s[0] == "offline" or s[1] in ("admin.vm.property.Set", "admin.vm.Start"))]
# Recorded but not yet marked after CreateDisposable: qubesd chose the name,
# and a record alone cannot prove the qube of that name is still that one.
SIGKILL_UNPROVEN = [("tor", "admin.vm.tag.Set", "before"),
                    ("tor", "admin.vm.feature.Set", "before")]


def _paused(sim, method: str, when: str) -> bool:
    st = sim.snapshot()
    if when == "before":
        return any(p["method"] == method for p in st.get("paused", []))
    return any(c["method"] == method for c in st["calls"])


def _service_paused_at(broker, sim, profile: str, method: str, when: str, seconds: float):
    """A service that sent its file and is held at that Admin API call."""
    sim.set_fault("slow_call", [method, when, seconds])
    proc = broker.start(arg=profile)
    proc.stdin.write(header("a.txt") + b"x")
    proc.stdin.close()
    wait_for(lambda: _paused(sim, method, when), f"{method} to be under way")
    return proc


@pytest.mark.parametrize(("profile", "method", "when"), STEPS)
def test_sigterm_at_each_step_leaves_no_disposable(broker, sim, profile, method, when):
    proc = _service_paused_at(broker, sim, profile, method, when, 3)
    proc.send_signal(signal.SIGTERM)
    err = finish(proc)
    assert proc.returncode == Exit.INTERNAL, err
    assert "terminated by signal 15" in err
    assert sim.disposables() == []


@pytest.mark.parametrize(("profile", "method", "when"), SIGKILL_PROVEN)
def test_sigkill_after_the_record_is_swept_by_the_next_request(broker, sim, profile, method,
                                                               when):
    proc = _service_paused_at(broker, sim, profile, method, when, 60)
    proc.kill()
    proc.wait(timeout=DEADLINE)
    (left,) = sim.disposables()
    sim.set_fault("slow_call", None)
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    assert f"removing {left}" in r.err
    assert sim.disposables() == []


@pytest.mark.parametrize(("profile", "method", "when"), SIGKILL_UNPROVEN)
def test_sigkill_before_marking_leaves_a_reported_disposable(broker, sim, profile, method,
                                                             when):
    proc = _service_paused_at(broker, sim, profile, method, when, 60)
    proc.kill()
    proc.wait(timeout=DEADLINE)
    (left,) = sim.disposables()
    sim.set_fault("slow_call", None)
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    assert sim.disposables() == [left]  # never killed on a guess
    (record,) = broker.run_dir.glob("*.sweep")  # kept, naming it, for check and reap
    assert left in record.read_text()


def test_an_unmarked_recorded_name_of_another_template_is_not_killed(broker, sim):
    """The session died before marking its disposable, and the name now
    belongs to a disposable of another template: it is not ours."""
    proc = _service_paused_at(broker, sim, "tor", "admin.vm.tag.Set", "before", 60)
    proc.kill()
    proc.wait(timeout=DEADLINE)
    (left,) = sim.disposables()
    sim.remove_qube(left)
    _add_disposable(sim, left, "dom0")  # same name, template default-dvm
    sim.set_fault("slow_call", None)
    assert broker.open_file().code == Exit.OK
    assert left in sim.disposables()


# --- 7.4: concurrent sweeps of one stale record ----------------------------------

def test_concurrent_requests_sweep_a_stale_record_once(broker, sim):
    """Three requests meet one dead session's record while a kill fails: none
    of them may fail because another removed or rewrote the record."""
    for _ in range(3):
        proc = _hanging_session(broker, sim)
        proc.kill()
        proc.wait(timeout=DEADLINE)
        sim.set_fault("kill_fails", 1)
        sim.set_fault("disposable_behaviour", "edit")
        procs = [Broker.start(broker) for _ in range(3)]
        for p in procs:
            p.stdin.write(header("a.txt") + b"x")
            p.stdin.close()
        for p in procs:
            err = finish(p)
            assert p.returncode == Exit.OK, err
        assert sim.disposables() == []  # destroy() tried twice: the failed kill, then again
