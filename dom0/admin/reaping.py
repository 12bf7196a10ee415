"""Find and remove the disposables this service left behind - by the
broker's own rule (ownership.proof), and nothing else.

A dead session's record (its flock is free) names what it left. A qube is
removed only when everything the broker puts on its disposables agrees with
that record (dom0/ownership.py). What cannot be proven is reported - never
removed:
- a qube a dead record names that lacks part of the proof (the service was
  SIGKILLed between creating and marking it);
- the disposables an interrupted admin.vm.CreateDisposable may have left
  (the record says one was under way; its result has no name anywhere): the
  unmarked DispVMs of that DVM template that dom0 created, which look exactly
  like qrexec's own @dispvm disposables;
- a DispVM carrying the marker of a session that has no record (a marker
  can be copied from a DVM template, so it proves nothing by itself).
Live sessions are never touched. Liveness is the record's flock, never a pid.

Order matters: the inventory is read *before* the records are scanned. A
broker locks its record before it creates and marks a disposable, so any
disposable marked by a session that was alive at scan time is seen as alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from whonix_open.dom0 import disposable, ownership, sessions
from whonix_open.dom0.admin import records
from whonix_open.dom0.admin.inventory import Inventory
from whonix_open.dom0.backend import Backend

MARKER = disposable.MARKER_FEATURE


class Orphan(NamedTuple):
    qube: str
    session: str
    running: bool
    stale: sessions.Stale | None = None  # the dead record naming it, if any
    unproven: str | None = None  # why it cannot be proven this service's: left alone


class Action(NamedTuple):
    qube: str
    session: str
    result: str  # "removed", "would remove", "failed", "skipped: <why>"

    def to_json(self) -> dict:
        return {"qube": self.qube, "session": self.session, "result": self.result}


def _running(inventory: Inventory, name: str) -> bool:
    q = inventory.get(name)
    return q is not None and q.running


def orphans(backend: Backend, inventory: Inventory, alive: Sequence[records.Record],
            stale: Sequence[sessions.Stale]) -> list[Orphan]:
    """What dead sessions left, proven or not, as the broker's sweep judges it."""
    found: list[Orphan] = []
    for s in stale:
        for name in dict.fromkeys([*s.disposables, *ownership.pending_of(s)]):
            why = ownership.proof(backend, name, s)
            if why is None:
                found.append(Orphan(name, s.session, _running(inventory, name), s))
            elif why != ownership.GONE and name in s.disposables:
                found.append(Orphan(name, s.session, _running(inventory, name), s, why))
    named = {o.qube for o in found} | {n for r in alive for n in r.disposables}
    for s in stale:
        if s.creating is None:
            continue
        for q in sorted(inventory.values()):
            if q.klass == "DispVM" and q.template == s.creating and q.name not in named \
                    and ownership.CREATED_BY_DOM0 in q.tags and MARKER not in q.features:
                found.append(Orphan(q.name, s.session, q.running, s,
                                    f"an admin.vm.CreateDisposable of {s.creating} was under "
                                    f"way when session {s.session} died, and this unmarked "
                                    f"disposable of it may be its result"))
    known = {r.id for r in alive} | {s.session for s in stale}
    seen = {o.qube for o in found}
    for q in sorted(inventory.values()):
        session = q.features.get(MARKER)
        if q.klass == "DispVM" and session and session not in known and q.name not in seen:
            found.append(Orphan(q.name, session, q.running, None,
                                f"it carries the marker of session {session}, which has no "
                                f"record (a DVM template's features are copied into its "
                                f"disposables)"))
    return found


def reap(backend: Backend, inventory: Inventory, run_dir: str, *,
         dry_run: bool) -> list[Action]:
    """Remove the proven orphans (or, with *dry_run*, only say which ones);
    report the unproven ones."""
    with records.claimed(run_dir, claim=not dry_run) as claim:
        stale = claim.stale
        found = orphans(backend, inventory, claim.alive, stale)
        actions, left = [], {s.session: [] for s in stale}
        candidates = {s.session: False for s in stale}
        for o in found:
            if o.unproven is not None:
                actions.append(Action(o.qube, o.session,
                                      f"skipped: cannot prove it is this service's: {o.unproven}"))
                if o.stale is not None and o.qube in o.stale.disposables:
                    left[o.session].append(o.qube)
                elif o.stale is not None:
                    candidates[o.session] = True
            elif dry_run:
                actions.append(Action(o.qube, o.session, "would remove"))
            elif disposable.destroy(backend, o.qube, remove=True):
                actions.append(Action(o.qube, o.session, "removed"))
            else:
                actions.append(Action(o.qube, o.session, "failed"))
                left[o.session].append(o.qube)
        if not dry_run:
            for s in stale:  # as the broker's sweep: keep the record of what is left
                claim.finish(s, left[s.session], s.creating if candidates[s.session] else None)
        return actions
