"""Find and remove the disposables this service left behind - by the
broker's own rule (service.is_left_by), and nothing else.

Two ways a disposable is left behind:
- a dead session's record names it (its flock is free): it is that session's
  if it carries the marker `whonix-open-session=<session>`, or - killed
  between recording and marking - it is a DispVM of the recorded DVM
  template that dom0 created;
- it carries the marker of a session that has no live record at all (the
  run dir was lost).
Live sessions, qubes of another class, another session's and unmarked
qubes are never touched. Liveness is the record's flock, never a pid.

Order matters: the inventory is read *before* the records are scanned. A
broker locks its record before it creates and marks a disposable, so any
disposable marked by a session that was alive at scan time is seen as alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from whonix_open.dom0 import disposable, sessions
from whonix_open.dom0.admin import records
from whonix_open.dom0.admin.inventory import Inventory
from whonix_open.dom0.backend import Backend, NoSuchQube
from whonix_open.dom0.service import is_left_by

MARKER = disposable.MARKER_FEATURE


class Orphan(NamedTuple):
    qube: str
    session: str
    running: bool
    stale: sessions.Stale | None = None  # the dead record naming it, if any


class Action(NamedTuple):
    qube: str
    session: str
    result: str  # "removed", "would remove", "failed", "skipped: <why>"

    def to_json(self) -> dict:
        return {"qube": self.qube, "session": self.session, "result": self.result}


def orphans(backend: Backend, inventory: Inventory, alive: Sequence[records.Record],
            stale: Sequence[sessions.Stale]) -> list[Orphan]:
    """What dead sessions left, as the broker's sweep judges it."""
    found: list[Orphan] = []
    for s in stale:
        for name in s.disposables:
            q = inventory.get(name)
            if q is not None and q.klass == "DispVM" and is_left_by(backend, name, s):
                found.append(Orphan(name, s.session, q.running, s))
    seen = {o.qube for o in found}
    known = {r.id for r in alive} | {s.session for s in stale}
    for q in sorted(inventory.values()):
        session = q.features.get(MARKER)
        if q.klass == "DispVM" and session and session not in known and q.name not in seen:
            found.append(Orphan(q.name, session, q.running))
    return found


def _still_left(backend: Backend, o: Orphan) -> str | None:
    """None if *o* is still what was left (a fresh read: a dispNNNN name may
    have been reused meanwhile), else why not."""
    try:
        if backend.info(o.qube).klass != "DispVM":
            return "not a disposable"
        if o.stale is None and backend.feature(o.qube, MARKER) != o.session:
            return "marker changed"
    except NoSuchQube:
        return "already gone"
    return None


def reap(backend: Backend, inventory: Inventory, run_dir: str, *,
         dry_run: bool) -> list[Action]:
    """Remove the orphans (or, with *dry_run*, only say which ones)."""
    with records.claimed(run_dir, claim=not dry_run) as claim:
        stale = claim.stale
        found = orphans(backend, inventory, claim.alive, stale)
        if dry_run:
            return [Action(o.qube, o.session, "would remove") for o in found]
        actions, left = [], {s.session: [] for s in stale}
        for o in found:
            why = _still_left(backend, o)
            if why is not None:
                actions.append(Action(o.qube, o.session, f"skipped: {why}"))
            elif disposable.destroy(backend, o.qube, remove=True):
                actions.append(Action(o.qube, o.session, "removed"))
            else:
                actions.append(Action(o.qube, o.session, "failed"))
                if o.stale is not None:
                    left[o.session].append(o.qube)
        for s in stale:  # as the broker's sweep: keep the record of what is left
            claim.finish(s, left[s.session])
        return actions

