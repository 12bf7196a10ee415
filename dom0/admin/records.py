"""The broker's session records, read-only, as the admin command needs them.

A record is `<run dir>/<owner>.<pid>.<random>.session` holding JSON
{"disposables", "pid", "caller", "owner", "profile", "dvm", "network",
"started", "deadline"}; its session is alive exactly while the service that
wrote it holds the file's flock (dom0/sessions.py). The pid is shown, never
trusted: a reused pid cannot make a dead session look alive.

The run dir is writable by group qubes: every field is checked, and a field
that fails the check is dropped, never passed on to qubesd or a terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import NamedTuple

from whonix_open.contract import is_profile_name
from whonix_open.dom0 import sessions
from whonix_open.dom0.request import is_qube_name
from whonix_open.dom0.sessions import SUFFIX


class Record(NamedTuple):
    id: str  # the session id: the marker value on its disposables
    path: str
    alive: bool
    disposables: tuple[str, ...] = ()
    caller: str | None = None
    owner: str | None = None
    profile: str | None = None
    dvm: str | None = None
    network: str | None = None  # a gateway's name or "offline"
    pid: int | None = None
    started: float | None = None
    deadline: float | None = None


def _num(value: object) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and 0 <= value < 2**40 else None


def parse(session_id: str, path: str, alive: bool, data: bytes) -> Record:
    try:
        raw = json.loads(data or b"{}")
    except ValueError:
        raw = {}
    if not isinstance(raw, dict):
        raw = {}

    def qube(key: str) -> str | None:
        value = raw.get(key)
        return value if isinstance(value, str) and is_qube_name(value) else None

    names = raw.get("disposables")
    disposables = tuple(n for n in names if isinstance(n, str) and is_qube_name(n)) \
        if isinstance(names, list) else ()
    profile = raw.get("profile")
    network = raw.get("network")
    pid = raw.get("pid")
    # The file is named after the qube the session counts against.
    named = session_id.rsplit(".", 2)[0]
    return Record(
        id=session_id, path=path, alive=alive, disposables=disposables,
        caller=qube("caller"), owner=qube("owner") or (named if is_qube_name(named) else None),
        dvm=qube("dvm"),
        profile=profile if isinstance(profile, str) and is_profile_name(profile) else None,
        network=network if isinstance(network, str) and is_qube_name(network) else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
        started=_num(raw.get("started")), deadline=_num(raw.get("deadline")))


def scan(directory: str) -> list[Record]:
    """Every session record, alive or not (a missing directory has none).
    Under the run dir's lock, as the broker counts its sessions: our brief
    look at a record's lock then never makes the broker count it twice."""
    if not os.path.isdir(directory):
        return []
    with sessions._dir_lock(directory):
        return scan_locked(directory)


def scan_locked(directory: str) -> list[Record]:
    """scan() for a caller that holds the run dir's lock already."""
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    records = []
    for entry in entries:
        if not entry.endswith(SUFFIX):
            continue
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, OSError):
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                alive = False
            except BlockingIOError:
                alive = True
            data = os.pread(fd, 65536, 0)
        finally:
            os.close(fd)
        records.append(parse(entry[: -len(SUFFIX)], path, alive, data))
    return records


def try_claim(path: str) -> int | None:
    """Take the flock of a dead session's record, so that the broker's own
    sweep (which takes only records whose flock is free) and a second reap
    leave it alone while its leftovers are removed. The descriptor, or None
    if the record is held (alive, or being swept by someone else) or gone.
    Call it under the run dir's lock: a record being created is not yet
    locked by its service."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not unlinked meanwhile
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None
