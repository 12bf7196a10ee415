"""whonix.OpenInDisposable / whonix.ViewInDisposable end to end: the real
service executable, real pipes, the simulated Qubes and disposable side."""

from __future__ import annotations

import os
import re
import signal
import socket

import pytest

from tests.dom0.conftest import header
from tests.helpers import DEADLINE, wait_for
from whonix_open.contract import SERVICE_OPEN, SERVICE_VIEW, Exit

CREATE = "admin.vm.CreateDisposable"


def methods(sim) -> list[str]:
    return [c["method"] for c in sim.calls()]


def finish(proc) -> str:
    """Wait for a service started with broker.start(); its stderr."""
    try:
        proc.wait(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.stderr.read().decode(errors="replace")


def audit_line(err: str) -> str:
    lines = [line for line in err.splitlines() if " exit=" in line]
    assert len(lines) == 1, err
    return lines[0]


# --- success paths ----------------------------------------------------------

def test_open_tor_edits_come_back_and_disposable_is_gone(broker, sim):
    content = b"%PDF-1.7 the original\n"
    r = broker.open_file("report.pdf", content)
    assert r.code == Exit.OK, r.err
    assert r.out.startswith(content) and len(r.out) > len(content)  # edited copy back
    assert sim.disposables() == []
    (got,) = sim.received()
    assert got["name"] == "report.pdf" and not got["view_only"] and got["size"] == len(content)
    line = audit_line(r.err)
    assert "caller=anon-whonix service=whonix.OpenInDisposable profile=tor" in line
    assert "dvm=whonix-workstation-18-dvm" in line and "network=sys-whonix" in line
    assert re.search(r"disposable=disp\d+ ", line) and "exit=0" in line
    assert b"the original" not in r.err.encode()  # the log never carries data


def _sets_before_start(sim, name: str) -> dict[str, str]:
    """The property.Set calls on *name* before its Start, key -> value."""
    out: dict[str, str] = {}
    for c in sim.calls():
        if c["dest"] == name and c["method"] == "admin.vm.Start":
            return out
        if c["dest"] == name and c["method"] == "admin.vm.property.Set":
            out[c["arg"]] = c.get("payload", "")
    raise AssertionError(f"{name} was never started")


@pytest.mark.parametrize("arg, netvm", [("tor", "sys-whonix"), ("offline", "")])
def test_everything_is_set_before_the_first_start(broker, sim, arg, netvm):
    r = broker.open_file(arg=arg)
    assert r.code == Exit.OK, r.err
    (service,) = sim.services()
    name = service["qube"]
    sets = _sets_before_start(sim, name)
    assert sets["default_dispvm"] == ""  # no nested disposable (DESIGN.md)
    if arg == "offline":  # not the DVM template's network: Create.DispVM
        assert sets == {"auto_cleanup": "True", "netvm": "", "default_dispvm": ""}
        assert "admin.vm.Create.DispVM" in methods(sim) and CREATE not in methods(sim)
    else:  # the DVM template's own netvm: CreateDisposable, nothing to change
        assert sets == {"default_dispvm": ""}
    # and the simulated qubesd saw it boot that way and relay that way
    assert service["netvm"] == (netvm or None) and service["default_dispvm"] is None
    kill = [c for c in sim.calls() if c["method"] == "admin.vm.Kill"]
    assert [c["dest"] for c in kill] == [name]


def test_view_only_returns_nothing_even_if_the_disposable_replies(broker, sim):
    # The simulated vm-file-editor "edits" and sends the file back even in
    # view-only mode, like the real one; dom0 must discard it.
    r = broker.open_file("photo.jpg", b"\xff\xd8jpeg", view_only=True, service=SERVICE_VIEW)
    assert r.code == Exit.OK, r.err
    assert r.out == b""
    (got,) = sim.received()
    assert got["view_only"] and got["replied"]
    assert sim.disposables() == []


def test_view_service_discards_reply_even_without_view_only_header(broker, sim):
    r = broker.open_file("a.txt", b"text", view_only=False, service=SERVICE_VIEW)
    assert r.code == Exit.OK and r.out == b""


def test_offline_profile_has_no_netvm(broker, sim):
    r = broker.open_file(arg="offline")
    assert r.code == Exit.OK, r.err
    netvm_sets = [c for c in sim.calls()
                  if c["method"] == "admin.vm.property.Set" and c["arg"] == "netvm"]
    assert [c.get("payload", "") for c in netvm_sets] == [""]
    assert "network=offline" in audit_line(r.err)
    assert sim.disposables() == []


def test_relay_passes_the_callers_pipe_itself(broker, sim):
    """dom0 never reads the stream: the disposable side holds the caller's pipe."""
    sim.set_fault("disposable_behaviour", "hang")
    proc = broker.start()
    ours = os.fstat(proc.stdin.fileno()).st_ino
    proc.stdin.write(header("x.txt") + b"data")
    proc.stdin.close()
    rec = wait_for(lambda: sim.received(), "the disposable to receive the file")[0]
    theirs = os.stat(f"/proc/{rec['pid']}/fd/0").st_ino
    assert ours == theirs
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert sim.disposables() == []


# --- refusals before any disposable exists ---------------------------------

@pytest.mark.parametrize("arg", ["Tor", "-x", "a" * 32, "tor_2", "nope"])
def test_bad_or_unknown_profile_is_64_without_admin_calls(broker, sim, arg):
    r = broker.open_file(arg=arg)
    assert r.code == Exit.BAD_REQUEST
    assert sim.calls() == []
    if arg == "nope":
        assert "unknown profile nope" in r.err
    else:
        assert arg not in r.err


def test_argument_mangled_by_qrexec_is_refused(broker, sim):
    # qrexec turns "../etc" into "_.._etc"-like text; still not a profile name.
    r = broker.open_file(arg="_.._etc")
    assert r.code == Exit.BAD_REQUEST and sim.calls() == []


def test_missing_qrexec_environment_is_64(broker, sim):
    env = broker.env(SERVICE_OPEN, "", "anon-whonix")
    del env["QREXEC_REMOTE_DOMAIN"]
    assert broker.run(header("a") + b"x", env=env).code == Exit.BAD_REQUEST
    assert sim.calls() == []


def test_unknown_caller_is_64(broker, sim):
    r = broker.open_file(caller="ghost")
    assert r.code == Exit.BAD_REQUEST
    assert CREATE not in methods(sim)


@pytest.mark.parametrize("toml, why", [
    ("[profiles.tor\n", "cannot be read or parsed"),
    ("color = 'red'\n", "unknown key"),
    ("[profiles.tor]\ngateway = 'sys-firewall'\n", "not a Whonix-Gateway"),
    ("[profiles.tor]\ndvm = 'default-dvm'\n", "not a Whonix-Workstation"),
    ("[profiles.tor]\ndvm = 'anon-whonix'\n", "not a disposable template"),
    ("[profiles.tor]\ndvm = 'nowhere'\n", "does not exist"),
])
def test_misconfiguration_is_66_and_says_why(broker, sim, toml, why):
    broker.config.write_text(toml)
    r = broker.open_file()
    assert r.code == Exit.MISCONFIGURED, r.err
    assert why in r.err
    assert CREATE not in methods(sim)


def test_no_whonix_gateway_anywhere_is_66(broker, sim):
    sim.set_feature("whonix-gateway-18", "whonix-gw", None)
    r = broker.open_file()
    assert r.code == Exit.MISCONFIGURED and "no Whonix-Gateway" in r.err
    assert CREATE not in methods(sim)


def test_clearnet_dvm_netvm_is_never_used(broker, sim):
    """The DVM template's netvm is sys-firewall: dom0 still enforces sys-whonix."""
    sim.set_property("whonix-workstation-18-dvm", "netvm", "sys-firewall")
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    assert "network=sys-whonix" in audit_line(r.err)


def test_non_whonix_caller_still_gets_a_tor_disposable(broker, sim):
    """personal's default_dispvm is a Debian DVM: dom0 picks the Whonix one."""
    r = broker.open_file(caller="personal")
    assert r.code == Exit.OK, r.err
    line = audit_line(r.err)
    assert "dvm=whonix-workstation-18-dvm" in line and "network=sys-whonix" in line


# --- failures after create: always destroyed --------------------------------

def test_create_fails_is_69(broker, sim):
    sim.set_fault("create_fails", True)
    r = broker.open_file()
    assert r.code == Exit.DISPOSABLE_FAILED
    assert sim.disposables() == []


@pytest.mark.parametrize("keeps", [True, False])
def test_start_fails_is_69_and_nothing_is_left(broker, sim, keeps):
    sim.set_fault("start_fails", True)
    sim.set_fault("start_fails_keeps_qube", keeps)
    r = broker.open_file()
    assert r.code == Exit.DISPOSABLE_FAILED, r.err
    assert sim.disposables() == []


@pytest.mark.parametrize("fault", ["wrong_klass", "wrong_template"])
def test_verification_failure_is_70(broker, sim, fault):
    sim.set_fault(fault, True)
    r = broker.open_file()
    assert r.code == Exit.VERIFICATION_FAILED, r.err
    assert sim.received() == []  # not a byte reached it
    assert sim.disposables() == []


def test_netvm_read_back_mismatch_is_67(broker, sim):
    sim.set_fault("netvm_set_ignored", True)
    sim.set_property("whonix-workstation-18-dvm", "netvm", "sys-firewall")
    r = broker.open_file()
    assert r.code == Exit.NETWORK_REFUSED, r.err
    assert sim.received() == []
    assert sim.disposables() == []


def test_offline_read_back_mismatch_is_67(broker, sim):
    sim.set_fault("netvm_set_ignored", True)
    r = broker.open_file(arg="offline")
    assert r.code == Exit.NETWORK_REFUSED, r.err
    assert sim.received() == [] and sim.disposables() == []


def test_netvm_change_while_open_is_71(broker, sim):
    sim.set_fault("netvm_change_to", "sys-firewall")
    r = broker.open_file()
    assert r.code == Exit.NETVM_CHANGED, r.err
    assert sim.disposables() == []


def test_disposable_side_failure_is_69(broker, sim):
    sim.set_fault("disposable_behaviour", "fail")
    r = broker.open_file()
    assert r.code == Exit.DISPOSABLE_FAILED, r.err
    assert sim.disposables() == []


def test_qubesd_unreachable_is_73(broker, sim):
    sim.set_fault("qubesd_unreachable", True)
    assert broker.open_file().code == Exit.INTERNAL


# --- signals, hang-ups, crashes ----------------------------------------------

def _hanging_session(broker, sim, **kw):
    """A session whose viewer stays open until the test ends it."""
    sim.set_fault("disposable_behaviour", "hang")
    before = len(sim.received())
    proc = broker.start(**kw)
    proc.stdin.write(header("big.iso") + b"data")
    proc.stdin.close()
    wait_for(lambda: len(sim.received()) > before, "the file to arrive in the disposable")
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_mid_relay_kills_the_disposable(broker, sim, sig):
    proc = _hanging_session(broker, sim)
    proc.send_signal(sig)
    err = finish(proc)
    assert proc.returncode == Exit.INTERNAL
    assert f"terminated by signal {int(sig)}" in err
    assert sim.disposables() == []


def test_caller_hanging_up_kills_the_disposable(broker, sim):
    proc = _hanging_session(broker, sim)
    proc.stdout.close()  # the caller's end of our stdout goes away
    proc.wait(timeout=DEADLINE)
    assert "the caller went away" in proc.stderr.read().decode()
    assert sim.disposables() == []


def test_caller_hanging_up_in_view_only_mode(broker, sim):
    proc = _hanging_session(broker, sim, service=SERVICE_VIEW)
    proc.stdout.close()
    proc.wait(timeout=DEADLINE)
    assert sim.disposables() == []


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_open_over_qrexec_sockets_edits_come_back(broker, sim):
    """dom0's qrexec-client gives a service socketpairs, not pipes: the
    hang-up check must not mistake them for a caller that went away."""
    sim.set_fault("disposable_behaviour", "edit")
    proc, stdin, stdout = broker.start_like_qrexec()
    stdin.sendall(header("notes.txt") + b"hello\n")
    stdin.shutdown(socket.SHUT_WR)  # the caller's EOF (process_io.c close_stdin)
    reply = _read_all(stdout)
    err = finish(proc)
    assert proc.returncode == Exit.OK, err
    assert reply and reply != b"hello\n"
    assert sim.disposables() == []


def test_caller_connection_lost_over_qrexec_sockets_kills_the_disposable(broker, sim):
    """When the caller's connection breaks, dom0's qrexec-client does not
    close our descriptors: it shuts them down (process_io.c close_stdin:
    SHUT_WR, close_stdout: SHUT_RD) and waits for us. That must be noticed."""
    sim.set_fault("disposable_behaviour", "hang")
    proc, stdin, stdout = broker.start_like_qrexec()
    stdin.sendall(header("big.iso") + b"data")
    stdin.shutdown(socket.SHUT_WR)
    wait_for(lambda: sim.received(), "the file to arrive in the disposable")
    stdout.shutdown(socket.SHUT_RD)  # the vchan is gone; the sockets stay open
    try:
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "the caller went away" in proc.stderr.read().decode()
    assert proc.returncode == Exit.INTERNAL
    assert sim.disposables() == []
    stdin.close()
    stdout.close()


def test_sigkilled_service_leaves_a_record_the_next_request_cleans(broker, sim):
    proc = _hanging_session(broker, sim)
    (left,) = sim.disposables()
    proc.kill()
    proc.wait(timeout=DEADLINE)
    assert sim.disposables() == [left]  # what qubes-issues #4983 describes
    sim.set_fault("disposable_behaviour", "edit")
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    assert f"removing {left}" in r.err
    assert sim.disposables() == []


def test_stale_record_for_a_recycled_name_is_not_killed(broker, sim):
    proc = _hanging_session(broker, sim)
    (left,) = sim.disposables()
    proc.kill()
    proc.wait(timeout=DEADLINE)
    # Someone else's qube now has that name: it carries no marker of ours.
    sim.set_feature(left, "whonix-open-session", "another-session")
    sim.set_fault("disposable_behaviour", "edit")
    assert broker.open_file().code == Exit.OK
    assert left in sim.disposables()


# --- limits and the loop guard ----------------------------------------------

def test_per_qube_limit_is_68_and_frees_up(broker, sim):
    broker.config.write_text("[limits]\nper_qube = 2\n")
    sessions = [_hanging_session(broker, sim) for _ in range(2)]
    assert len(sim.disposables()) == 2
    r = broker.open_file()
    assert r.code == Exit.TOO_MANY
    assert methods(sim).count(CREATE) == 2
    sessions.append(_hanging_session(broker, sim, caller="personal"))  # other qubes may
    assert len(sim.disposables()) == 3
    for p in sessions:
        p.send_signal(signal.SIGTERM)
        finish(p)
    sim.set_fault("disposable_behaviour", "edit")
    assert broker.open_file().code == Exit.OK
    assert sim.disposables() == []


def test_total_limit_is_68(broker, sim):
    broker.config.write_text("[limits]\nper_qube = 1\ntotal = 3\n")
    procs = [_hanging_session(broker, sim, caller=c) for c in ("anon-whonix", "personal",
                                                               "sys-whonix")]
    r = broker.open_file(caller="sys-firewall")
    assert r.code == Exit.TOO_MANY
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        finish(proc)


def test_crashed_sessions_do_not_hold_the_limit(broker, sim):
    broker.config.write_text("[limits]\nper_qube = 1\n")
    proc = _hanging_session(broker, sim)
    proc.kill()
    proc.wait(timeout=DEADLINE)
    sim.set_fault("disposable_behaviour", "edit")
    assert broker.open_file().code == Exit.OK


def test_a_disposable_of_this_service_cannot_call_it(broker, sim):
    proc = _hanging_session(broker, sim)
    (disp,) = sim.disposables()
    r = broker.open_file(caller=disp)
    assert r.code == Exit.LOOP, r.err
    assert methods(sim).count(CREATE) == 1
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert sim.disposables() == []


def test_other_disposables_may_call_it(broker, sim):
    """A disposable the user started from another DVM is an ordinary caller."""
    sim.add_qube("disp77", klass="DispVM", template="default-dvm", netvm="sys-firewall")
    r = broker.open_file(caller="disp77")
    assert r.code == Exit.OK, r.err


def test_signal_during_startup_still_cleans_up(broker, sim):
    sim.set_fault("start_delay", 30.0)
    proc = broker.start()
    proc.stdin.write(header("a") + b"x")
    proc.stdin.close()
    wait_for(lambda: CREATE in methods(sim), "CreateDisposable")
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert proc.returncode == Exit.INTERNAL
    assert sim.disposables() == []


def test_per_qube_limit_counts_dotted_names_right(broker, sim):
    """Qube names may contain dots; "my.vm" and "my" are different callers."""
    sim.add_qube("my.vm", klass="AppVM", template="debian-13", netvm="sys-firewall")
    sim.add_qube("my", klass="AppVM", template="debian-13", netvm="sys-firewall")
    broker.config.write_text("[limits]\nper_qube = 1\n")
    proc = _hanging_session(broker, sim, caller="my.vm")
    other = _hanging_session(broker, sim, caller="my")
    assert len(sim.disposables()) == 2
    assert broker.open_file(caller="my.vm").code == Exit.TOO_MANY
    for p in (proc, other):
        p.send_signal(signal.SIGTERM)
        finish(p)
    assert sim.disposables() == []


def test_a_failed_kill_is_retried_by_the_next_request(broker, sim):
    """If dom0 cannot kill the disposable, the session record stays and the
    next request removes it."""
    sim.set_fault("kill_fails", 2)  # the kill, and destroy()'s second try
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    assert "could not" in r.err
    (left,) = sim.disposables()
    r = broker.open_file()
    assert r.code == Exit.OK, r.err
    assert f"removing {left}" in r.err
    assert sim.disposables() == []


def test_a_disposable_without_auto_cleanup_is_refused_and_removed(broker, sim):
    sim.set_fault("no_auto_cleanup", True)
    r = broker.open_file()
    assert r.code == Exit.VERIFICATION_FAILED, r.err
    assert "auto_cleanup" in r.err
    assert sim.received() == [] and sim.disposables() == []
