"""Session files: limits and the records of dead sessions."""

import fcntl
import json
import os

import pytest

from whonix_open.contract import Exit
from whonix_open.dom0.config import Limits
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.sessions import open_session


def dead_session(run_dir, name, disposables):
    path = run_dir / f"{name}.session"
    path.write_text(json.dumps({"disposables": disposables, "pid": 1}))
    return path


def test_a_dead_sessions_record_yields_only_qube_names(tmp_path):
    dead_session(tmp_path, "work.1.aa", ["disp12", "../../etc", "a b", 7, "disp13"])
    session, stale = open_session(str(tmp_path), "work", Limits())
    try:
        (s,) = stale
        assert s.session == "work.1.aa" and s.disposables == ["disp12", "disp13"]
    finally:
        session.release()


def test_unreadable_record_is_stale_with_nothing_to_remove(tmp_path):
    (tmp_path / "work.1.bb.session").write_bytes(b"\xff not json")
    session, stale = open_session(str(tmp_path), "work", Limits())
    session.release()
    assert [(s.session, s.disposables) for s in stale] == [("work.1.bb", [])]


def test_live_sessions_count_towards_the_limit(tmp_path):
    live = dead_session(tmp_path, "work.2.cc", ["disp1"])
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, as by a running service
    try:
        with pytest.raises(Refusal) as e:
            open_session(str(tmp_path), "work", Limits(per_qube=1, total=10))
        assert e.value.code == Exit.TOO_MANY
        session, stale = open_session(str(tmp_path), "other", Limits(per_qube=1, total=10))
        assert stale == []
        session.release()
    finally:
        os.close(fd)
    assert not os.path.exists(tmp_path / f"{session.id}.session")
