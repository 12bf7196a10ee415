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
  it removes them (dom0/ownership.py `sweep_stale`): two requests never sweep
  the same record, and a `.sweep` file whose flock is free is stale again.

The *owner* is the qube a session counts against (ownership.owner_of: a
disposable counts against the qube that created it). The run-dir-wide lock is
held only for the few file operations of counting and creating, never across
Admin API calls.

Who uses the run dir (DESIGN.md, "Sessions, limits and cleanup"): the
services run as dom0's user (group `qubes`), `whonix-open-admin` as that user,
as root (`sudo`) or as the reap unit's user (group `qubes`). The tmpfiles entry
makes the directory `2770 root:qubes` (setgid: every file in it gets group
`qubes`) and the lock `0660 root:qubes`; every file made here is made
exclusively and set to 0660 whatever the umask, so each of them can use what
the others made. Nothing in the directory is trusted: only regular files are
opened, never through a symbolic link (`O_NOFOLLOW`), and an entry of any other
kind or name is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from whonix_open.contract import (
    SERVICE_APP,
    SERVICE_CONVERT,
    SERVICE_OPEN,
    SERVICE_URL,
    SERVICE_VIEW,
    Exit,
)
from whonix_open.dom0.config import Limits
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import is_qube_name

RUN_DIR_ENV = "WHONIX_OPEN_RUN_DIR"
DEFAULT_RUN_DIR = "/run/whonix-open"
LOCK = ".lock"
SUFFIX = ".session"
CLAIMED = ".sweep"
FILE_MODE = 0o660  # group qubes: the services, the admin tool and the reap unit
# Owner of every disposable whose creator dom0 cannot name (qrexec's @dispvm
# disposables are all created-by-dom0): they share one owner's slots.
SHARED_DISPOSABLES = "@dispvm"
# What a session holds, by service (the record's "kind"; shown by the admin tool).
KINDS = {SERVICE_OPEN: "file", SERVICE_VIEW: "file", SERVICE_URL: "link", SERVICE_APP: "app",
         SERVICE_CONVERT: "convert"}
_RECORD_MAX = 65536
_STEPS = ("creating", "pending")  # left out of the record while None
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Stale(NamedTuple):
    """What a dead service left behind. *fd* holds the record's flock: only
    the request that got it sweeps this record (see `finish_stale`)."""

    session: str
    disposables: list[str]
    dvm: str | None  # the DVM template its disposables came from
    path: str
    fd: int
    # The DVM template of an admin.vm.CreateDisposable that was under way when
    # the service died: it may have left a disposable no record names
    # (DESIGN.md, "The SIGKILL window").
    creating: str | None = None
    record: Mapping[str, Any] = {}


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
        self.info = info  # kind, caller, owner, started, deadline, profile, dvm, network

    def record(self, disposables: list[str], **info: Any) -> None:
        """Name the disposables this session owns (before anything is done
        with a new one), plus what it is doing (shown by the admin tool).
        `creating=DVM` says an admin.vm.CreateDisposable is under way,
        `pending=NAME` an admin.vm.Create.DispVM; None that it is over."""
        self.info.update(info)
        write_record(self.fd, disposables, {k: v for k, v in self.info.items()
                                            if v is not None or k not in _STEPS})

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


class NotAFile(OSError):
    """A run-dir entry that is not a regular file (a directory, a FIFO, ...)."""


def open_regular(path: str, flags: int = os.O_RDWR) -> int:
    """Open an existing regular file, never through a symbolic link (ELOOP)
    and never blocking on a FIFO; anything but a regular file raises NotAFile."""
    fd = os.open(path, flags | _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotAFile(0, "not a regular file", path)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_exclusive(path: str) -> int:
    """A new regular file (O_EXCL: never a link's target, never an existing
    file), mode 0660 whatever the umask; its group comes from the setgid run dir."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_fd(directory: str) -> int:
    """The run dir's lock, as tmpfiles made it (read access is enough for a
    flock). Where it is missing (a run dir made by hand, tests) it is made
    as every file here is made; two makers racing both end up with the one file."""
    path = os.path.join(directory, LOCK)
    for _ in range(3):
        try:
            return open_regular(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        try:
            return create_exclusive(path)
        except FileExistsError:
            continue
    raise FileExistsError(0, "appears and vanishes", path)


@contextlib.contextmanager
def dir_lock(directory: str) -> Iterator[None]:
    fd = _lock_fd(directory)
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


def _qube(value: object) -> str | None:
    return value if isinstance(value, str) and is_qube_name(value) else None


def parse_entry(entry: str) -> tuple[str, str] | None:
    """(session id, suffix) of a record's file name
    `<owner>.<pid>.<random>.session|.sweep`, or None for anything else."""
    session, dot, suffix = entry.rpartition(".")
    if not dot or f".{suffix}" not in (SUFFIX, CLAIMED):
        return None
    parts = session.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isalnum():
        return None
    if parts[0] != SHARED_DISPOSABLES and not is_qube_name(parts[0]):
        return None
    return session, f".{suffix}"


def owner_of_session(session: str) -> str:
    # <owner>.<pid>.<random>: qube names may contain dots, so from the right
    return session.rsplit(".", 2)[0]


def scan_records(directory: str, claim: bool = True) -> tuple[list[Live], list[Stale]]:
    """(live sessions, dead sessions' records with their flock held and, with
    *claim*, renamed to .sweep). Entries that are not a well-named regular
    file are left alone."""
    alive: list[Live] = []
    stale: list[Stale] = []
    for entry in sorted(os.listdir(directory)):
        parsed = parse_entry(entry)
        if parsed is None:
            continue
        session, suffix = parsed
        path = os.path.join(directory, entry)
        try:
            fd = open_regular(path)
        except OSError:  # gone meanwhile, a link (ELOOP), not a regular file
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a running service, or another request sweeping it
            if suffix == SUFFIX:
                alive.append(Live(session, owner_of_session(session), read_record(fd)))
            os.close(fd)
            continue
        if os.fstat(fd).st_nlink == 0:  # swept and removed since we listed it
            os.close(fd)
            continue
        if claim and suffix == SUFFIX:  # claim it: no longer counted as a session
            claimed = os.path.join(directory, session + CLAIMED)
            try:
                os.rename(path, claimed)
            except OSError:
                os.close(fd)
                continue
            path = claimed
        record = read_record(fd)
        stale.append(Stale(session=session, disposables=_names(record.get("disposables")),
                           dvm=_qube(record.get("dvm")), path=path, fd=fd,
                           creating=_qube(record.get("creating")), record=record))
    return alive, stale


def finish_stale(stale: Stale, left: list[str], creating: str | None = None) -> None:
    """After a sweep: remove the record, or keep it naming what is *left*
    (and, with *creating*, the interrupted CreateDisposable), with everything
    else it said."""
    if left or creating:
        info = {k: v for k, v in stale.record.items()
                if k not in ("disposables", "creating", "pending")}
        write_record(stale.fd, left, {**info, "dvm": stale.dvm,
                                      **({"creating": creating} if creating else {})})
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
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o770)  # dom0: tmpfiles made it (2770 root:qubes)
        with dir_lock(directory):
            alive, stale = scan_records(directory)
            mine = sum(1 for s in alive if s.owner == owner)
            if mine >= limits.per_qube:
                raise Refusal(Exit.TOO_MANY, f"{owner} already has {mine} open disposable(s)")
            if len(alive) >= limits.total:
                raise Refusal(Exit.TOO_MANY, f"{len(alive)} disposables already open in all")
            path = os.path.join(directory,
                                f"{owner}.{os.getpid()}.{os.urandom(4).hex()}{SUFFIX}")
            fd = create_exclusive(path)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException as e:
        for s in stale:  # not swept now: the next request gets them
            os.close(s.fd)
        if isinstance(e, OSError):
            raise Refusal(Exit.INTERNAL, f"session directory {directory}: "
                          f"{e.strerror or e}") from None
        raise
    now = time.time()
    session = Session(path, fd, {**info, "owner": owner, "started": int(now),
                                 "deadline": int(now + 60 * limits.max_session_minutes)})
    session.record([])
    return session, stale
