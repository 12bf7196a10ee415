"""Per-session lock files: the open-disposable limits and crash recovery.

Each running service holds an exclusive flock on its own file
`<run dir>/<caller>.<pid>.<random>.session` for as long as it lives; the file
names the disposable it created. The kernel drops the flock when the process
dies, however it dies, so:

- counting live sessions = counting files whose flock is held (a crashed
  service can never leave a limit stuck);
- a file whose flock can be taken belongs to a dead service: its disposable
  is stale and is removed by the next request (see service.sweep_stale).

The run-dir-wide lock is held only for the few file operations of counting
and creating, never across Admin API calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from whonix_open.contract import Exit
from whonix_open.dom0.config import Limits
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import is_qube_name

RUN_DIR_ENV = "WHONIX_OPEN_RUN_DIR"
DEFAULT_RUN_DIR = "/run/whonix-open"
SUFFIX = ".session"


class Stale(NamedTuple):
    """What a dead service left behind."""

    session: str
    disposables: list[str]
    path: str  # removed once its disposables are gone


class Session:
    """This service's own lock file; `id` is the marker put on its disposable."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.id = os.path.basename(path)[: -len(SUFFIX)]

    def record(self, disposables: list[str]) -> None:
        """Name the disposables this session owns (before anything is done
        with a new one)."""
        write_record(self.fd, disposables)

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


def run_dir(env: Mapping[str, str]) -> str:
    return env.get(RUN_DIR_ENV, DEFAULT_RUN_DIR)


@contextlib.contextmanager
def _dir_lock(directory: str) -> Iterator[None]:
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_record(fd: int, disposables: list[str]) -> None:
    data = json.dumps({"disposables": disposables, "pid": os.getpid()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_disposables(fd: int) -> list[str]:
    try:
        names = json.loads(os.pread(fd, 65536, 0) or b"{}").get("disposables", [])
    except (OSError, ValueError, AttributeError):
        return []
    # The run dir is writable by group qubes: only qube names reach qubesd.
    return [n for n in names if is_qube_name(n)] if isinstance(names, list) else []


def _scan(directory: str) -> tuple[list[str], list[Stale]]:
    """(session ids alive, sessions of dead services)."""
    alive: list[str] = []
    stale: list[Stale] = []
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(SUFFIX):
            continue
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive.append(entry[: -len(SUFFIX)])
                continue
            stale.append(Stale(session=entry[: -len(SUFFIX)], disposables=_read_disposables(fd),
                               path=path))
        finally:
            os.close(fd)
    return alive, stale


def open_session(directory: str, caller: str, limits: Limits) -> tuple[Session, list[Stale]]:
    """Take a session slot for *caller*, or Refusal(TOO_MANY). Also returns
    what dead services left behind, for the caller of this to clean up."""
    try:
        os.makedirs(directory, mode=0o770, exist_ok=True)
        with _dir_lock(directory):
            alive, stale = _scan(directory)
            # <caller>.<pid>.<random>: qube names may contain dots, so from the right
            mine = sum(1 for s in alive if s.rsplit(".", 2)[0] == caller)
            if mine >= limits.per_qube:
                raise Refusal(Exit.TOO_MANY, f"{caller} already has {mine} open disposable(s)")
            if len(alive) >= limits.total:
                raise Refusal(Exit.TOO_MANY, f"{len(alive)} disposables already open in all")
            path = os.path.join(directory,
                                f"{caller}.{os.getpid()}.{os.urandom(4).hex()}{SUFFIX}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        raise Refusal(Exit.INTERNAL, f"session directory {directory}: {e.strerror}") from None
    return Session(path, fd), stale
