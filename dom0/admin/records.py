"""The broker's session records, as the admin command shows them.

A record is `<run dir>/<owner>.<pid>.<random>.session` holding JSON
{"disposables", "pid", "kind", "caller", "owner", "profile", "dvm",
"network", "started", "deadline"} and, while the disposable is being
created, "creating" (a DVM template) or "pending" (a name); its session is
alive exactly while the service that wrote it holds the file's flock
(dom0/sessions.py, whose scan this uses). The pid is shown, never trusted: a
reused pid cannot make a dead session look alive.

The run dir is writable by group qubes: every field is checked, and a field
that fails the check is dropped, never passed on to qubesd or a terminal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from whonix_open.contract import is_profile_name
from whonix_open.dom0 import sessions
from whonix_open.dom0.request import is_qube_name


class Record(NamedTuple):
    id: str  # the session id: the marker value on its disposables
    alive: bool
    disposables: tuple[str, ...] = ()
    kind: str | None = None  # what it holds: sessions.KINDS (file, link, app)
    caller: str | None = None
    owner: str | None = None  # the qube the session counts against
    profile: str | None = None
    dvm: str | None = None
    network: str | None = None  # a gateway's name or "offline"
    pid: int | None = None
    started: float | None = None
    deadline: float | None = None
    creating: str | None = None  # a CreateDisposable of this DVM template was under way


KINDS = frozenset(sessions.KINDS.values())


def _num(value: object) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and 0 <= value < 2**40 else None


def _qube(value: object) -> str | None:
    return value if isinstance(value, str) and is_qube_name(value) else None


def parse(session_id: str, owner: str | None, raw: Mapping[str, Any], alive: bool) -> Record:
    names = raw.get("disposables")
    disposables = tuple(n for n in names if _qube(n)) if isinstance(names, list) else ()
    profile, pid, kind = raw.get("profile"), raw.get("pid"), raw.get("kind")
    return Record(
        id=session_id, alive=alive, disposables=disposables,
        kind=kind if isinstance(kind, str) and kind in KINDS else None,
        caller=_qube(raw.get("caller")), creating=_qube(raw.get("creating")),
        # "@dispvm" is the shared owner of disposables dom0 cannot trace to a qube
        owner=_qube(raw.get("owner")) or (owner if owner == sessions.SHARED_DISPOSABLES
                                          else _qube(owner)),
        profile=profile if isinstance(profile, str) and is_profile_name(profile) else None,
        dvm=_qube(raw.get("dvm")), network=_qube(raw.get("network")),
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
        started=_num(raw.get("started")), deadline=_num(raw.get("deadline")))


class RunDirUnusable(Exception):
    """The run dir or its lock cannot be used (the message says why)."""


class Claim:
    """Live records and dead sessions' records with their flocks held."""

    def __init__(self, alive: list[Record], stale: list[sessions.Stale]) -> None:
        self.alive = alive
        self.stale = stale
        self._open = {s.session for s in stale}

    def finish(self, stale: sessions.Stale, left: list[str], creating: str | None) -> None:
        """As the broker's sweep ends: remove the record, or keep it naming *left*."""
        self._open.discard(stale.session)
        sessions.finish_stale(stale, left, creating)

    def release(self) -> None:
        for s in self.stale:
            if s.session in self._open:
                self._open.discard(s.session)
                os.close(s.fd)


@contextlib.contextmanager
def claimed(directory: str, claim: bool = False) -> Iterator[Claim]:
    """Scan under the run dir's lock, as the broker does (so a record being
    created is never taken for dead); the lock is released before the caller
    makes any Admin API call, while the flocks of dead records stay held and
    keep the broker's sweep and a second reap away from them. With *claim*
    (to sweep them) the dead records are claimed as the broker claims them
    (renamed, sessions.scan_records); without it nothing in the run dir changes."""
    if not os.path.isdir(directory):
        yield Claim([], [])
        return
    try:
        with sessions.dir_lock(directory):
            alive, stale = sessions.scan_records(directory, claim=claim)
    except OSError as e:  # a lock that is a link, not a regular file, unreadable
        raise RunDirUnusable(f"session directory {directory}: {e.strerror or e}") from None
    claim = Claim([parse(s.session, s.owner, s.record, True) for s in alive], stale)
    try:
        yield claim
    finally:
        claim.release()


def scan(directory: str) -> list[Record]:
    """Every record, live and dead (a dead one shows what it names)."""
    with claimed(directory) as claim:
        alive, stale = claim.alive, claim.stale
        dead = [parse(s.session, sessions.owner_of_session(s.session), s.record, False)
                for s in stale]
    return alive + dead
