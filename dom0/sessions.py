"""Per-session lock files: the open-disposable limits and crash recovery.

Each running service holds an exclusive flock on its own file
`<run dir>/<owner>.<pid>.<random>.session` for as long as it lives; the file
records what the session is doing and the disposables it created. The kernel
drops the flock when the process dies, however it dies, so:

- counting live sessions = counting files whose flock is held (a crashed
  service can never leave a limit stuck);
- a file whose flock can be taken belongs to a dead service: its disposables
  are stale. The request that takes that flock renames the file to
  `<session>.sweep` (not counted as a live session) and keeps the flock while
  it removes them (service.sweep_stale): two requests never sweep the same
  record, and a `.sweep` file whose flock is free is stale again.

The *owner* is the qube a session counts against (service.owner_of: a
disposable counts against the qube that created it). The run-dir-wide lock is
held only for the few file operations of counting and creating, never across
Admin API calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from whonix_open.contract import Exit
from whonix_open.dom0.config import Limits
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import is_qube_name

RUN_DIR_ENV = "WHONIX_OPEN_RUN_DIR"
DEFAULT_RUN_DIR = "/run/whonix-open"
SUFFIX = ".session"
CLAIMED = ".sweep"
# Owner of every disposable whose creator dom0 cannot name (qrexec's @dispvm
# disposables are all created-by-dom0): they share one owner's slots.
SHARED_DISPOSABLES = "@dispvm"
_RECORD_MAX = 65536


class Stale(NamedTuple):
    """What a dead service left behind. *fd* holds the record's flock: only
    the request that got it sweeps this record (see `finish_stale`)."""

    session: str
    disposables: list[str]
    dvm: str | None  # the DVM template its disposables came from
    path: str
    fd: int


class Live(NamedTuple):
    """A running session, as its record says (see `Session.record`)."""

    session: str
    owner: str
    record: dict[str, Any]


class Session:
    """This service's own lock file; `id` is the marker put on its disposable."""

    def __init__(self, path: str, fd: int, info: dict[str, Any]) -> None:
        self.path = path
        self.fd = fd
        self.id = os.path.basename(path)[: -len(SUFFIX)]
        self.info = info  # caller, owner, started, deadline, profile, dvm, network

    def record(self, disposables: list[str], **info: Any) -> None:
        """Name the disposables this session owns (before anything is done
        with a new one), plus what it is doing (shown by the admin tool)."""
        self.info.update(info)
        write_record(self.fd, disposables, self.info)

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1

    def keep(self, disposables: list[str]) -> None:
        """Leave the record naming *disposables* for the next request's sweep."""
        self.record(disposables)
        os.close(self.fd)
        self.fd = -1


def run_dir(env: Mapping[str, str]) -> str:
    return env.get(RUN_DIR_ENV, DEFAULT_RUN_DIR)


@contextlib.contextmanager
def dir_lock(directory: str) -> Iterator[None]:
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_record(fd: int, disposables: list[str], info: Mapping[str, Any] | None = None) -> None:
    data = json.dumps({**(info or {}), "disposables": disposables, "pid": os.getpid()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def read_record(fd: int) -> dict[str, Any]:
    """The record, as untrusted data: the run dir is writable by group qubes."""
    try:
        record = json.loads(os.pread(fd, _RECORD_MAX, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _names(value: object) -> list[str]:
    # Only qube names ever reach qubesd.
    return [n for n in value if is_qube_name(n)] if isinstance(value, list) else []


def _owner_of_file(entry: str) -> str:
    # <owner>.<pid>.<random>.session: qube names may contain dots, so from the right
    return entry.rsplit(".", 3)[0]


def scan_records(directory: str, claim: bool = True) -> tuple[list[Live], list[Stale]]:
    """(live sessions, dead sessions' records with their flock held and, with
    *claim*, renamed to .sweep)."""
    alive: list[Live] = []
    stale: list[Stale] = []
    for entry in sorted(os.listdir(directory)):
        session, dot, suffix = entry.rpartition(".")
        if not dot or f".{suffix}" not in (SUFFIX, CLAIMED):
            continue
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a running service, or another request sweeping it
            if entry.endswith(SUFFIX):
                alive.append(Live(session, _owner_of_file(entry), read_record(fd)))
            os.close(fd)
            continue
        if os.fstat(fd).st_nlink == 0:  # swept and removed since we listed it
            os.close(fd)
            continue
        if claim and entry.endswith(SUFFIX):  # claim it: no longer counted as a session
            claimed = os.path.join(directory, session + CLAIMED)
            os.rename(path, claimed)
            path = claimed
        record = read_record(fd)
        dvm = record.get("dvm")
        stale.append(Stale(session=session, disposables=_names(record.get("disposables")),
                           dvm=dvm if is_qube_name(dvm) else None, path=path, fd=fd))
    return alive, stale


def finish_stale(stale: Stale, left: list[str]) -> None:
    """After a sweep: remove the record, or keep it naming what is *left*."""
    if left:
        write_record(stale.fd, left, {"dvm": stale.dvm})
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale.path)
    os.close(stale.fd)


def open_session(directory: str, owner: str, limits: Limits,
                 info: Mapping[str, Any]) -> tuple[Session, list[Stale]]:
    """Take a session slot counted against *owner*, or Refusal(TOO_MANY).
    Also returns what dead services left behind, with their flocks held, for
    the caller of this to sweep and `finish_stale`."""
    stale: list[Stale] = []
    try:
        os.makedirs(directory, mode=0o770, exist_ok=True)
        with dir_lock(directory):
            alive, stale = scan_records(directory)
            mine = sum(1 for s in alive if s.owner == owner)
            if mine >= limits.per_qube:
                raise Refusal(Exit.TOO_MANY, f"{owner} already has {mine} open disposable(s)")
            if len(alive) >= limits.total:
                raise Refusal(Exit.TOO_MANY, f"{len(alive)} disposables already open in all")
            path = os.path.join(directory,
                                f"{owner}.{os.getpid()}.{os.urandom(4).hex()}{SUFFIX}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException as e:
        for s in stale:  # not swept now: the next request gets them
            os.close(s.fd)
        if isinstance(e, OSError):
            raise Refusal(Exit.INTERNAL, f"session directory {directory}: {e.strerror}") \
                from None
        raise
    now = time.time()
    session = Session(path, fd, {**info, "owner": owner, "started": int(now),
                                 "deadline": int(now + 60 * limits.max_session_minutes)})
    session.record([])
    return session, stale
