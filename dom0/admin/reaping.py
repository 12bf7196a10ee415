"""Find and remove the disposables this service left behind.

A disposable is an orphan when it is a DispVM carrying the marker feature
`whonix-open-session=<id>` (set by the broker, dom0 only can set features)
and session <id> is not alive: its record's flock is free, or there is no
record at all (e.g. the run dir was cleared). Nothing else is ever touched:
no marker, another class, or a live session - left alone.

Order matters: the inventory is read *before* the records are scanned. A
broker writes and locks its record before it creates and marks a disposable,
so any disposable marked by a session that was alive at scan time has its
record seen as alive.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import NamedTuple

from whonix_open.dom0 import disposable, sessions
from whonix_open.dom0.admin import records
from whonix_open.dom0.admin.inventory import Inventory
from whonix_open.dom0.backend import Backend, NoSuchQube

MARKER = disposable.MARKER_FEATURE


class Orphan(NamedTuple):
    qube: str
    session: str
    running: bool


class Action(NamedTuple):
    qube: str
    session: str
    result: str  # "removed", "would remove", "failed", "skipped: <why>"

    def to_json(self) -> dict:
        return {"qube": self.qube, "session": self.session, "result": self.result}


def orphans(inventory: Inventory, scanned: Sequence[records.Record],
            busy: Sequence[str] = ()) -> list[Orphan]:
    """Marked disposables whose session is neither alive nor in *busy*."""
    alive = {r.id for r in scanned if r.alive} | set(busy)
    found = []
    for q in sorted(inventory.values()):
        session = q.features.get(MARKER)
        if q.klass == "DispVM" and session and session not in alive:
            found.append(Orphan(q.name, session, q.running))
    return found


def _still_ours(backend: Backend, orphan: Orphan) -> str | None:
    """None if the qube still is that session's disposable (fresh read, as
    the broker's sweep does: a dispNNNN name may have been reused), else why not."""
    try:
        if backend.info(orphan.qube).klass != "DispVM":
            return "not a disposable"
        if backend.feature(orphan.qube, MARKER) != orphan.session:
            return "marker changed"
    except NoSuchQube:
        return "already gone"
    return None


def reap(backend: Backend, inventory: Inventory, run_dir: str, *,
         dry_run: bool) -> list[Action]:
    """Remove the orphans (or, with *dry_run*, only say which ones)."""
    if dry_run:
        return [Action(o.qube, o.session, "would remove")
                for o in orphans(inventory, records.scan(run_dir))]
    held: dict[str, tuple[int, str]] = {}  # session id -> (fd, path) of claimed records
    busy: list[str] = []
    try:
        if os.path.isdir(run_dir):
            with sessions._dir_lock(run_dir):
                scanned = records.scan_locked(run_dir)
                for r in scanned:
                    if r.alive:
                        continue
                    fd = records.try_claim(r.path)
                    if fd is None:
                        busy.append(r.id)  # someone else is removing it
                    else:
                        held[r.id] = (fd, r.path)
        else:
            scanned = []
        actions = []
        failed: set[str] = set()
        for o in orphans(inventory, scanned, busy):
            why = _still_ours(backend, o)
            if why is not None:
                actions.append(Action(o.qube, o.session, f"skipped: {why}"))
            elif disposable.destroy(backend, o.qube, remove=True):
                actions.append(Action(o.qube, o.session, "removed"))
            else:
                failed.add(o.session)
                actions.append(Action(o.qube, o.session, "failed"))
        # A dead record has done its job once none of the qubes it names is
        # left; one naming a qube without the marker is kept (and reported by
        # `check`), never acted on.
        removed = {a.qube for a in actions if a.result == "removed"}
        by_id = {r.id: r for r in scanned}
        for session, (_fd, path) in held.items():
            left = [n for n in by_id[session].disposables if n in inventory and n not in removed]
            if session not in failed and not left:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return actions
    finally:
        for fd, _path in held.values():
            os.close(fd)
