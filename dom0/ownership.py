"""Whose is a disposable? The rules the broker and `whonix-open-admin` share:

- `owner_of`: the qube a request counts against (the limits);
- `proof`/`sweep_stale`: which disposables a dead session left behind, and
  removing exactly those (the broker's sweep; `whonix-open-admin reap` uses
  `proof` too, so both remove the same qubes and nothing else).

A disposable is removed only when everything the broker puts on its
disposables agrees (DESIGN.md, "Sessions, limits and cleanup"): the dead
session's record names it, it carries that session's marker and the
containment tag, it is a DispVM of the recorded DVM template with
auto_cleanup, created by dom0. A DVM template's features are copied into its
disposables, so a marker alone proves nothing (a named disposable of a
template that carries one would be killed). The one exception is a
Create.DispVM interrupted by a SIGKILL: its random name was recorded as
*pending* before the call, and a halted, unmarked DispVM of that name and
template, created by dom0, is this service's. Anything else is reported as
unproven and left to the administrator.
"""

from __future__ import annotations

from collections.abc import Sequence

from whonix_open.dom0 import disposable, sessions
from whonix_open.dom0.audit import log_line
from whonix_open.dom0.backend import Backend, BackendError, NoSuchQube, QubeInfo
from whonix_open.dom0.request import is_qube_name

CREATED_BY = "created-by-"
CREATED_BY_DOM0 = "created-by-dom0"
MAX_CREATOR_CHAIN = 4  # disposables created by disposables created by ...
PENDING = "pending"  # record key: the name of a Create.DispVM under way


def owner_of(backend: Backend, caller: QubeInfo, tags: frozenset[str]) -> str:
    """The qube a request counts against: the caller, or for a disposable
    (whose *tags* are given) the qube that created it (its `created-by-<qube>`
    tag, followed up the chain). Disposables that dom0 created for a qrexec
    `@dispvm` call carry only `created-by-dom0`: they all share one owner."""
    info = caller
    for _ in range(MAX_CREATOR_CHAIN):
        if info.klass != "DispVM":
            return info.name
        if info is not caller:
            tags = backend.tags(info.name)
        creators = [t[len(CREATED_BY):] for t in tags if t.startswith(CREATED_BY)]
        named = [c for c in creators if c != "dom0" and is_qube_name(c)]
        if len(named) != 1:
            return sessions.SHARED_DISPOSABLES
        try:
            info = backend.info(named[0])
        except NoSuchQube:
            return named[0]  # counts against the name it was created by
    return sessions.SHARED_DISPOSABLES


GONE = "already gone"


def proof(backend: Backend, name: str, stale: sessions.Stale) -> str | None:
    """None if *name* is proven to be a disposable that dead session made,
    else why not (GONE if no such qube exists). One GetAll, one tag.List,
    one feature.Get. Raises BackendError."""
    if name not in stale.disposables and name != stale.record.get(PENDING):
        return "its record does not name it"
    try:
        info = backend.info(name)
        tags = backend.tags(name)
        marker = backend.feature(name, disposable.MARKER_FEATURE)
    except NoSuchQube:
        return GONE
    if info.klass != "DispVM":
        return f"it is a {info.klass}, not a DispVM"
    if stale.dvm is None or info.template != stale.dvm:
        return f"it is not a disposable of {stale.dvm or 'the recorded DVM template'}"
    if CREATED_BY_DOM0 not in tags:
        return "dom0 did not create it"
    if marker is None and name == stale.record.get(PENDING) \
            and name.startswith(disposable.NAME_PREFIX) and info.xid == -1:
        return None  # a Create.DispVM of this session, interrupted before marking
    if marker != stale.session:
        return ("it carries no marker" if marker is None
                else f"it carries the marker of session {marker}")
    if disposable.CONTAINED_TAG not in tags:
        return f"it lacks the tag {disposable.CONTAINED_TAG}"
    if not info.auto_cleanup:
        return "it has no auto_cleanup"
    return None


def is_left_by(backend: Backend, name: str, stale: sessions.Stale) -> bool:
    """Whether *name* is proven to be a disposable that dead session left."""
    return proof(backend, name, stale) is None


def sweep_stale(backend: Backend, stale: Sequence[sessions.Stale]) -> None:
    """Destroy what dead sessions provably left (each record is ours alone:
    its flock is held). The record stays, naming what is left - what could
    not be removed, and what exists but cannot be proven - for the next
    sweep, `whonix-open-admin reap` and `check`."""
    for s in stale:
        left = []
        try:
            for name in dict.fromkeys([*s.disposables, *pending_of(s)]):
                why = proof(backend, name, s)
                if why is None:
                    log_line(f"removing {name}, left behind by dead session {s.session}")
                    if not disposable.destroy(backend, name):
                        left.append(name)
                elif why != GONE and name in s.disposables:
                    left.append(name)  # not ours to remove: reported by check and reap
        except BackendError:
            left = s.disposables  # try again next time
        sessions.finish_stale(s, left, s.creating)


def pending_of(s: sessions.Stale) -> list[str]:
    """The name of the Create.DispVM the dead session had under way, if any."""
    name = s.record.get(PENDING)
    return [name] if isinstance(name, str) and is_qube_name(name) else []
