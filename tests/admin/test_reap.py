"""`whonix-open-admin reap`: removes the disposables of dead sessions, and
nothing else - not a live session's, not a foreign qube - whatever the pid
in a record says; --dry-run changes nothing."""

from __future__ import annotations

import os
import signal

from tests.admin.conftest import findings
from tests.dom0.conftest import Broker
from tests.helpers import wait_for

DEAD = "anon-whonix.4242.0badc0de"


def test_an_orphan_is_removed_and_a_foreign_disposable_is_not(make_admin):
    admin = make_admin("orphan")
    record = admin.session(DEAD, {"disposables": ["disp77"], "pid": 4242}, alive=False)
    out = admin.run("reap", "--json")
    assert out.code == 0
    assert out.json()["actions"] == [{"qube": "disp77", "session": DEAD, "result": "removed"}]
    assert admin.sim.disposables() == ["disp78"]  # someone else's: untouched
    assert not record.exists()  # its job is done


def test_dry_run_changes_nothing(make_admin):
    admin = make_admin("orphan")
    record = admin.session(DEAD, {"disposables": ["disp77"], "pid": 4242}, alive=False)
    before = admin.sim.snapshot()["qubes"]
    out = admin.run("reap", "--dry-run")
    assert out.code == 0 and out.out == f"disp77: would remove (session {DEAD})\n"
    assert admin.sim.snapshot()["qubes"] == before
    assert record.read_text() == '{"disposables": ["disp77"], "pid": 4242}'
    assert not [c for c in admin.sim.calls() if c["method"] != "admin.vm.List"]


def test_a_live_session_is_untouched_even_if_its_pid_is_gone(make_admin):
    admin = make_admin("orphan")
    # pid 999999 does not exist: only the flock says whether a session lives
    record = admin.session(DEAD, {"disposables": ["disp77"], "pid": 999999}, alive=True)
    out = admin.run("reap")
    assert out.code == 0 and out.out == "nothing to reap\n"
    assert "disp77" in admin.sim.disposables() and record.exists()


def test_a_reused_pid_does_not_keep_an_orphan_alive(make_admin):
    admin = make_admin("orphan")
    # the record's pid now belongs to a live process (this one): still dead
    admin.session(DEAD, {"disposables": ["disp77"], "pid": os.getpid()}, alive=False)
    assert admin.run("reap").code == 0
    assert "disp77" not in admin.sim.disposables()


def test_an_orphan_without_a_record_is_removed(make_admin):
    admin = make_admin("orphan")  # e.g. the run dir was lost
    assert admin.run("reap").code == 0
    assert admin.sim.disposables() == ["disp78"]


def test_a_record_naming_an_unmarked_qube_never_kills_it(make_admin):
    admin = make_admin("orphan")
    record = admin.session("anon-whonix.1.00000001", {"disposables": ["disp78", "vault"]},
                           alive=False)
    admin.run("reap")
    assert "disp78" in admin.sim.disposables() and admin.sim.qube("vault")
    assert record.exists()  # kept: it names a qube that is still there


def test_a_kill_that_fails_is_reported_and_retried(make_admin):
    admin = make_admin("orphan")
    admin.sim.set_fault("kill_fails", 2)
    first = admin.run("reap", "--json")
    assert first.code == 1 and first.json()["actions"][0]["result"] == "failed"
    assert "disp77" in admin.sim.disposables()
    second = admin.run("reap")
    assert second.code == 0 and "disp77" not in admin.sim.disposables()


def test_reap_after_the_service_was_killed(make_admin):
    """The real broker, SIGKILLed while a file is open: its disposable stays
    (nothing in the service can run); check reports it, reap removes it."""
    admin = make_admin()
    admin.sim.set_fault("disposable_behaviour", "hang")
    broker = Broker(admin.sim, admin.tmp)
    proc = broker.start(arg="tor")
    proc.stdin.write(b"report.pdf".ljust(256, b"\0") + b"data")
    proc.stdin.flush()
    disp = wait_for(lambda: [s["qube"] for s in admin.sim.services()], "the relay")[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    proc.stderr.close()
    assert disp in admin.sim.disposables()
    orphan = [f for f in findings(admin.check(), "FAIL") if f["check"] == "orphan"]
    assert [f["qubes"] for f in orphan] == [[disp]]
    assert admin.run("reap").code == 0
    assert disp not in admin.sim.disposables()
    assert not list(admin.run_dir.glob("*.session"))
