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
DVM = "whonix-workstation-18-dvm"
READS = {"admin.vm.List", "admin.vm.CurrentState", "admin.vm.property.Get",
         "admin.vm.property.GetAll", "admin.vm.feature.Get", "admin.vm.feature.CheckWithTemplate",
         "admin.vm.tag.List"}


def qubes(admin) -> dict:
    # The simulated qubesd gives a qube its uuid when it is first read (qubesd
    # has had one all along): not a change anybody made.
    return {n: {k: v for k, v in q.items() if k != "uuid"}
            for n, q in admin.sim.snapshot()["qubes"].items()}


def test_an_orphan_is_removed_and_a_foreign_disposable_is_not(make_admin):
    admin = make_admin("orphan")
    record = admin.session(DEAD, {"disposables": ["disp77"], "pid": 4242, "dvm": DVM},
                           alive=False)
    out = admin.run("reap", "--json")
    assert out.code == 0
    assert out.json()["actions"] == [{"qube": "disp77", "session": DEAD, "result": "removed"}]
    assert admin.sim.disposables() == ["disp78"]  # someone else's: untouched
    assert not record.exists()  # its job is done


def test_dry_run_changes_nothing(make_admin):
    admin = make_admin("orphan")
    record = admin.session(DEAD, {"disposables": ["disp77"], "pid": 4242, "dvm": DVM},
                           alive=False)
    before = qubes(admin)
    out = admin.run("reap", "--dry-run")
    assert out.code == 0 and out.out == f"disp77: would remove (session {DEAD})\n"
    assert qubes(admin) == before
    assert record.read_text() == f'{{"disposables": ["disp77"], "pid": 4242, "dvm": "{DVM}"}}'
    writes = [c for c in admin.sim.calls() if c["method"] not in READS]
    assert not writes


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
    admin.session(DEAD, {"disposables": ["disp77"], "pid": os.getpid(), "dvm": DVM},
                  alive=False)
    assert admin.run("reap").code == 0
    assert "disp77" not in admin.sim.disposables()


def test_a_marker_without_a_record_is_reported_never_removed(make_admin):
    admin = make_admin("orphan")  # e.g. the run dir was lost
    out = admin.run("reap", "--json")
    assert out.code == 0
    [action] = out.json()["actions"]
    assert action["qube"] == "disp77" and action["result"].startswith(
        f"skipped: cannot prove it is this service's: it carries the marker of session {DEAD}, "
        "which has no record")
    assert admin.sim.disposables() == ["disp77", "disp78"]


def _named_disposable_with_copied_marker(admin, session: str) -> None:
    """Issue 15 (3): a DVM template carrying the marker passes it on - DispVMs
    copy their template's features - here to a named disposable sys-usb with
    auto_cleanup off."""
    admin.sim.set_property("default-dvm", "features",
                           {"appmenus-dispvm": "1", "whonix-open-session": session})
    admin.sim.add_qube("sys-usb", klass="DispVM", template="default-dvm", auto_cleanup=False,
                       power_state="Running", tags=["created-by-dom0"],
                       features={"whonix-open-session": session})


def test_a_named_disposable_with_a_copied_marker_is_never_removed(make_admin):
    admin = make_admin()
    _named_disposable_with_copied_marker(admin, DEAD)
    assert admin.run("reap").code == 0
    assert admin.sim.qube("sys-usb") is not None
    # even when a dead record names it and the marker is that session's
    admin.session(DEAD, {"disposables": ["sys-usb"], "dvm": "default-dvm"}, alive=False)
    out = admin.run("reap", "--json").json()["actions"]
    assert [(a["qube"], a["result"].split(":")[0]) for a in out] == [("sys-usb", "skipped")]
    assert "whonix-open-disposable" in out[0]["result"]
    assert admin.sim.qube("sys-usb") is not None
    unproven = [f for f in findings(admin.check()) if f["check"] == "unproven"]
    assert [(f["level"], f["qubes"]) for f in unproven] == [("WARN", ["sys-usb"])]


def test_each_part_of_the_proof_is_needed(make_admin):
    """Record, marker, tag, DispVM, auto_cleanup, created-by-dom0, template:
    take any one away and reap leaves the qube alone."""
    breaks = {
        "tag": ("tags", ["anon-vm", "created-by-dom0"]),
        "created-by-dom0": ("tags", ["anon-vm", "whonix-open-disposable"]),
        "auto_cleanup": ("auto_cleanup", False),
        "marker": ("features", {"whonix-open-session": "anon-whonix.1.00000002"}),
        "template": ("template", "default-dvm"),
    }
    for what, (key, value) in breaks.items():
        admin = make_admin("orphan")
        admin.sim.set_property("disp77", key, value)
        admin.session(DEAD, {"disposables": ["disp77"], "dvm": "whonix-workstation-18-dvm"},
                      alive=False)
        out = admin.run("reap", "--json").json()["actions"]
        assert [a["result"].split(":")[0] for a in out if a["qube"] == "disp77"] == \
            ["skipped"], what
        assert "disp77" in admin.sim.disposables(), what
    admin = make_admin("orphan")  # and with all of them it goes
    admin.session(DEAD, {"disposables": ["disp77"], "dvm": "whonix-workstation-18-dvm"},
                  alive=False)
    assert admin.run("reap").code == 0 and "disp77" not in admin.sim.disposables()


def test_a_record_naming_someone_elses_qubes_never_kills_them(make_admin):
    admin = make_admin("orphan")
    # disp78: a DispVM of the same DVM template, but not created by dom0 for us
    record = admin.session("anon-whonix.1.00000001", {
        "disposables": ["disp78", "vault"], "dvm": DVM}, alive=False)
    actions = admin.run("reap", "--json").json()["actions"]
    assert {a["qube"]: a["result"].split(":")[0] for a in actions} == {
        "disp78": "skipped", "vault": "skipped", "disp77": "skipped"}
    assert "disp78" in admin.sim.disposables() and admin.sim.qube("vault")
    assert "disp77" in admin.sim.disposables()  # a marker without its record: unproven
    assert record.with_suffix(".sweep").exists()  # kept while they exist


def test_an_unmarked_disposable_of_a_dead_record_is_reported_not_removed(make_admin):
    """The service died between recording its new disposable and marking it:
    a dispNNNN name may have been reused since, so the record alone proves
    nothing - reported, kept in the record, never killed on a guess."""
    admin = make_admin("orphan")
    admin.sim.set_property("disp78", "tags", ["anon-vm", "created-by-dom0"])
    record = admin.session("anon-whonix.1.00000001", {
        "disposables": ["disp78"], "dvm": "whonix-workstation-18-dvm"}, alive=False)
    out = admin.run("reap", "--json").json()["actions"]
    assert {"qube": "disp78", "session": "anon-whonix.1.00000001",
            "result": "skipped: cannot prove it is this service's: it carries no marker"} in out
    assert "disp78" in admin.sim.disposables()
    assert '"disp78"' in record.with_suffix(".sweep").read_text()


def test_a_kill_that_fails_is_reported_and_retried(make_admin):
    admin = make_admin("orphan")
    admin.session(DEAD, {"disposables": ["disp77"], "dvm": DVM}, alive=False)
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


# --- issue 15 (5): a SIGKILL while qubesd executes the create -------------------

def _killed_in(admin, profile: str, method: str) -> Broker:
    """A service SIGKILLed after qubesd made its disposable, before the name
    came back: the record says which create was under way, nothing more."""
    from tests.dom0.test_hardening import _service_paused_at

    broker = Broker(admin.sim, admin.tmp)
    proc = _service_paused_at(broker, admin.sim, profile, method, "after", 60)
    proc.kill()
    proc.wait()
    for f in (proc.stdout, proc.stderr):
        f.close()
    admin.sim.set_fault("slow_call", None)
    return broker


def test_sigkill_in_create_dispvm_is_closed_by_the_recorded_name(make_admin):
    """offline: Create.DispVM's random name is recorded before the call, so
    the halted DispVM it made is proven this service's and removed."""
    admin = make_admin()
    broker = _killed_in(admin, "offline", "admin.vm.Create.DispVM")
    (left,) = admin.sim.disposables()
    assert left.startswith("whonix-open-disp") and admin.sim.qube(left)["auto_cleanup"] is False
    r = broker.open_file(arg="offline")
    assert r.code == 0, r.err
    assert f"removing {left}" in r.err and admin.sim.disposables() == []
    assert not list(admin.run_dir.glob("*.s*"))


def test_sigkill_in_create_disposable_leaves_a_running_preload_that_is_reported(make_admin):
    """tor on R4.3 with preloads: CreateDisposable hands out a running,
    networked preload, and qubesd chose its name - the dead service never
    learnt it. It looks exactly like a qrexec @dispvm disposable of the same
    DVM template, so nothing removes it on a guess: the next request and
    reap leave it, check and status name it, the administrator decides."""
    admin = make_admin("preload")
    ready = admin.sim.preloads(DVM)
    broker = _killed_in(admin, "tor", "admin.vm.CreateDisposable")
    (left,) = [d for d in admin.sim.disposables() if d not in admin.sim.preloads(DVM)]
    assert left in ready and admin.sim.qube(left)["power_state"] == "Running"
    assert admin.sim.qube(left)["netvm"] == "sys-whonix"  # the DVM's, the profile's network
    assert broker.open_file().code == 0
    assert left in admin.sim.disposables()
    out = admin.run("reap", "--json")
    assert out.code == 0
    [action] = [a for a in out.json()["actions"] if a["qube"] == left]
    assert action["result"].startswith("skipped: cannot prove it is this service's: an "
                                       f"admin.vm.CreateDisposable of {DVM} was under way")
    assert left in admin.sim.disposables()
    [warn] = [f for f in findings(admin.check()) if f["check"] == "unproven"]
    assert warn["qubes"] == [left] and warn["fix"] == [f"qvm-kill {left}"]
    [stale] = admin.run("status", "--all", "--json").json()["sessions"]
    assert stale["state"] == "stale" and stale["creating"] == DVM
    admin.sim.remove_qube(left)  # the administrator's qvm-kill
    assert admin.run("reap").out == "nothing to reap\n"
    assert not list(admin.run_dir.glob("*.s*"))  # the record goes with it


def test_odd_run_dir_entries_neither_crash_reap_nor_status(make_admin, tmp_path):
    """Issue 15 (2): a directory named like a record made reap crash with a
    traceback; a symlink planted as a record or as the lock was followed."""
    admin = make_admin("orphan")
    target = tmp_path / "planted"
    (admin.run_dir / "x.1.2.session").mkdir()
    (admin.run_dir / "y.1.3.sweep").symlink_to(target)
    for args in (("reap",), ("status", "--all"), ("check", "--policy-dir", str(admin.policy))):
        out = admin.run(*args)
        assert out.code in (0, 1) and "Traceback" not in out.err, (args, out.err)
    assert not target.exists()
    (admin.run_dir / ".lock").unlink()
    (admin.run_dir / ".lock").symlink_to(target)
    out = admin.run("reap")
    assert out.code == 3 and out.err.startswith("whonix-open-admin: ") and not target.exists()
