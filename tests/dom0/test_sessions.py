"""Session files: limits, records, and who sweeps the records of dead sessions."""

import fcntl
import json
import os
import stat

import pytest

from whonix_open.contract import Exit
from whonix_open.dom0.config import Limits
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.sessions import finish_stale, open_session, scan_records


def dead_session(run_dir, name, disposables, **record):
    path = run_dir / f"{name}.session"
    path.write_text(json.dumps({"disposables": disposables, "pid": 1, **record}))
    return path


def held(path):
    """Hold the file's flock, as a running service does; returns the fd."""
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def take(run_dir, owner="work", limits=None):
    return open_session(str(run_dir), owner, limits or Limits(),
                        {"caller": owner, "profile": "tor"})


def test_a_dead_sessions_record_yields_only_qube_names(tmp_path):
    dead_session(tmp_path, "work.1.aa", ["disp12", "../../etc", "a b", 7, "disp13"],
                 dvm="../x")
    session, stale = take(tmp_path)
    try:
        (s,) = stale
        assert s.session == "work.1.aa" and s.disposables == ["disp12", "disp13"]
        assert s.dvm is None  # not a qube name
        finish_stale(s, [])
    finally:
        session.release()
    assert os.listdir(tmp_path) == [".lock"]


def test_unreadable_record_is_stale_with_nothing_to_remove(tmp_path):
    (tmp_path / "work.1.bb.session").write_bytes(b"\xff not json")
    session, stale = take(tmp_path)
    session.release()
    assert [(s.session, s.disposables) for s in stale] == [("work.1.bb", [])]
    finish_stale(stale[0], [])


def test_live_sessions_count_towards_the_limit(tmp_path):
    fd = held(dead_session(tmp_path, "work.2.cc", ["disp1"]))
    try:
        with pytest.raises(Refusal) as e:
            take(tmp_path, "work", Limits(per_qube=1, total=10))
        assert e.value.code == Exit.TOO_MANY
        session, stale = take(tmp_path, "other", Limits(per_qube=1, total=10))
        assert stale == []
        session.release()
    finally:
        os.close(fd)
    assert not os.path.exists(tmp_path / f"{session.id}.session")


def test_a_stale_record_is_claimed_by_one_request_only(tmp_path):
    """Two requests never sweep the same dead session (issue 7.4: the second
    one used to reopen a record the first had deleted and fail with 73)."""
    dead_session(tmp_path, "work.3.dd", ["disp5"], dvm="dvm")
    first, stale = take(tmp_path, "a")
    (claimed,) = stale
    second, stale2 = take(tmp_path, "b")  # while the first one is sweeping
    assert stale2 == []
    finish_stale(claimed, [])  # the sweep removed everything: the record goes
    third, stale3 = take(tmp_path, "c")
    assert stale3 == []
    for s in (first, second, third):
        s.release()


def test_a_record_that_could_not_be_swept_stays_for_the_next_request(tmp_path):
    dead_session(tmp_path, "work.4.ee", ["disp5", "disp6"], dvm="dvm")
    session, (s,) = take(tmp_path, "a")
    finish_stale(s, ["disp6"])
    session.release()
    session, (again,) = take(tmp_path, "b")
    assert again.disposables == ["disp6"] and again.dvm == "dvm"
    finish_stale(again, [])
    session.release()


def test_the_record_says_what_the_session_does(tmp_path):
    session, _ = take(tmp_path, "work", Limits(max_session_minutes=10))
    try:
        session.record(["disp9"], dvm="dvm", network="sys-whonix")
        (live,), stale = scan_records(str(tmp_path), claim=False)
        assert stale == []
        assert live.owner == "work" and live.session == session.id
        r = live.record
        assert (r["caller"], r["profile"], r["dvm"], r["network"]) == (
            "work", "tor", "dvm", "sys-whonix")
        assert r["disposables"] == ["disp9"] and r["deadline"] - r["started"] == 600
    finally:
        session.release()
    assert scan_records(str(tmp_path), claim=False) == ([], [])


def test_dotted_owner_names_are_counted_apart(tmp_path):
    fd = held(dead_session(tmp_path, "my.vm.7.ff", []))
    try:
        session, _ = take(tmp_path, "my", Limits(per_qube=1, total=10))  # not "my.vm"
        session.release()
        with pytest.raises(Refusal):
            take(tmp_path, "my.vm", Limits(per_qube=1, total=10))
    finally:
        os.close(fd)


# --- issue 15 (1, 2): files usable by every user of the run dir; entries untrusted ---

def test_lock_and_records_are_group_usable_whatever_the_umask(tmp_path):
    """The reap timer ran as root with umask 022 and made `.lock` 0640: the
    services (dom0's user, group qubes) could no longer open it (73)."""
    old = os.umask(0o077)
    try:
        session, _ = take(tmp_path)
        try:
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        finally:
            session.release()
    finally:
        os.umask(old)
    assert modes == {".lock": 0o660, f"{session.id}.session": 0o660}


def test_an_existing_lock_is_used_read_only_and_left_as_it_is(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_bytes(b"")
    lock.chmod(0o440)  # as tmpfiles could make it: read access is enough for flock
    session, _ = take(tmp_path)
    session.release()
    assert stat.S_IMODE(lock.stat().st_mode) == 0o440


def test_a_symlink_as_lock_is_never_followed(tmp_path):
    run, target = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(Refusal) as e:
        take(run)
    assert e.value.code == Exit.INTERNAL and "session directory" in e.value.reason
    assert not target.exists()  # root's reap used to create it


def test_a_lock_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(Refusal) as e:
        take(tmp_path)
    assert e.value.code == Exit.INTERNAL and "not a regular file" in e.value.reason


def test_run_dir_entries_that_are_not_regular_records_are_left_alone(tmp_path):
    """A directory named like a record crashed reap and made every request
    fail with 73; a symlink was opened (and renamed, and written) through."""
    outside = tmp_path / "outside.json"
    outside.write_text('{"disposables": ["vault"]}')
    run = tmp_path / "run"
    run.mkdir()
    (run / "x.1.2.session").mkdir()
    (run / "y.1.3.session").symlink_to(outside)
    os.mkfifo(run / "z.1.4.session")
    (run / "not-a-record.session").write_text("{}")  # no pid, no random part
    (run / "..1.5.session").write_text("{}")  # not a qube name
    session, stale = take(run)
    session.release()
    assert stale == []
    assert outside.read_text() == '{"disposables": ["vault"]}'
    assert sorted(os.listdir(run)) == sorted([".lock", "x.1.2.session", "y.1.3.session",
                                              "z.1.4.session", "not-a-record.session",
                                              "..1.5.session"])


def test_every_broker_service_has_a_record_kind():
    """Each qrexec service that runs the broker's serve() records what it holds
    (a service added without a kind would die with 73 after the caller's wait)."""
    from pathlib import Path

    from whonix_open.contract import SERVICE_STATUS
    from whonix_open.dom0.sessions import KINDS

    rpc = Path(__file__).resolve().parents[2] / "qubes-rpc"
    services = {p.name for p in rpc.iterdir()} - {SERVICE_STATUS}
    assert services and services == set(KINDS)
