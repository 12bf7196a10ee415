"""Receiving the disposable's reply and putting it in place without ever
losing either the original or the edit.

- The reply is written to a hidden file ``.NAME.whonix-open-XXXXXXXX.part`` in
  the original's directory (so that the final rename is atomic), or, when no
  file can be made there, into the recovery directory. The file is created as
  ``.new``, locked (flock, held for as long as we have it open) and only then
  renamed to ``.part``: a leftover scan (vm/leftovers.py) never touches a file
  another run still holds, and never sees one before it is locked.
- Once the whole reply has arrived and dom0 reported success, the file is
  renamed to ``.complete`` (the marker a leftover scan trusts: such a leftover
  holds a complete edit and is kept, a ``.part`` one is removed).
- `apply()` replaces the original only as the last step, under an exclusive
  flock on the original we sent, after checking again (under that lock) that
  the original is still the file we sent: of two concurrent edits of one file
  exactly one is applied, the other is kept.
- `keep()` is for every reply that cannot be applied: it gets the name
  ``NAME.whonix-open-edited-<timestamp>`` next to the original, or a copy (read
  from the open descriptor, which still works when the directory has become
  read-only or was removed) in ``$XDG_DATA_HOME/whonix-open/recovered/``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass

from whonix_open.vm import oserrors
from whonix_open.vm.header import cut_front
from whonix_open.vm.targets import Target, change_since

KEPT_INFIX = ".whonix-open-edited-"
TEMP_INFIX = ".whonix-open-"
NEW, PART, COMPLETE = ".new", ".part", ".complete"
_NAME_MAX = 255
# Bytes of the original name in a temp file's name: "." + name + TEMP_INFIX +
# 8 random + ".complete" stays within NAME_MAX.
TEMP_NAME_ROOM = _NAME_MAX - 1 - len(TEMP_INFIX) - 8 - len(COMPLETE)
LOCK_WAIT = 30.0  # seconds to wait for another program's lock on the original
_LOCK_POLL = 0.02


class ApplyError(Exception):
    """The reply is fine but cannot replace the original (message says why)."""


class KeepError(Exception):
    """No copy of the reply could be kept anywhere (message says why)."""


@dataclass
class ReplyFile:
    path: str
    fd: int  # open, and flock'ed, until the file has its final name or is gone
    beside_original: bool  # False: it is already in the recovery directory
    why_elsewhere: str | None = None  # why not beside the original

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        # Unlink before close: while we hold the lock no scan touches it.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.close()


def recovery_dir() -> str:
    """$XDG_DATA_HOME/whonix-open/recovered (pyxdg; imported only when needed),
    created private to the user."""
    from xdg.BaseDirectory import xdg_data_home

    path = os.path.join(xdg_data_home, "whonix-open", "recovered")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def short_name(name: str, room: int = TEMP_NAME_ROOM) -> str:
    return os.fsdecode(cut_front(os.fsencode(name), room))


def _create_locked(directory: str, base: str) -> tuple[int, str]:
    prefix = "." + short_name(base) + TEMP_INFIX
    fd, new_path = tempfile.mkstemp(prefix=prefix, suffix=NEW, dir=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new file: never blocks
        path = new_path[: -len(NEW)] + PART
        os.rename(new_path, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(new_path)
        os.close(fd)
        raise
    return fd, path


def create_part_file(directory: str, base: str) -> ReplyFile:
    """A new, private, locked ``.BASE.whonix-open-XXXXXXXX.part`` in *directory*
    (--convert's output while it is written; a killed run's is removed by the
    leftover scan). Raises OSError."""
    fd, path = _create_locked(directory, base)
    return ReplyFile(path=path, fd=fd, beside_original=True)


def create_reply_file(target: Target) -> ReplyFile:
    """A new, empty, private (0600), locked file to receive the reply into.
    Raises OSError when neither place works."""
    base = os.path.basename(target.path)
    try:
        fd, path = _create_locked(target.directory, base)
        return ReplyFile(path=path, fd=fd, beside_original=True)
    except OSError as exc:  # not writable, full, no inodes: recovery dir
        why = oserrors.why(exc, target.directory)
    fd, path = _create_locked(recovery_dir(), base)
    return ReplyFile(path=path, fd=fd, beside_original=False, why_elsewhere=why)


def mark_complete(reply: ReplyFile) -> None:
    """The whole reply is here and dom0 said so: give it the name that tells
    a later leftover scan so, then write it to disk. Renamed first, so that a
    SIGKILL during a long fsync leaves a kept copy, not a removed one (a
    leftover is only ever kept, never applied). Best effort: a directory that
    became read-only keeps the ``.part`` name (apply or keep follow at once)."""
    if reply.path.endswith(PART):
        complete = reply.path[: -len(PART)] + COMPLETE
        with contextlib.suppress(OSError):
            os.rename(reply.path, complete)
            reply.path = complete
    os.fsync(reply.fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_original(fd: int, stop: threading.Event | None) -> bool:
    """Exclusive flock on the original we sent (all whonix-open runs take it
    before replacing). False when this file system has no flock."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if stop is not None and stop.is_set():
                raise ApplyError(
                    "interrupted while another program held a lock on the original"
                ) from None
            if time.monotonic() > deadline:
                raise ApplyError(
                    f"another program kept the original locked for {int(LOCK_WAIT)} s"
                ) from None
            time.sleep(_LOCK_POLL)
        except OSError:
            return False  # e.g. EOPNOTSUPP/EBADF (NFS without flock): no lock


def _read_only_fs(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def apply(target: Target, reply: ReplyFile, stop: threading.Event | None = None) -> None:
    """Atomically replace the original with the reply, keeping its mode bits.
    Raises ApplyError (reply untouched) when that would not be safe, or when
    *stop* is set while waiting for the lock."""
    if not reply.beside_original:
        raise ApplyError(reply.why_elsewhere or "no file could be made beside it")
    os.fchmod(reply.fd, stat.S_IMODE(target.st.st_mode))
    os.fsync(reply.fd)  # before the lock: keep the locked part short
    locked = _lock_original(target.fd, stop)
    try:
        change = change_since(target)
        if change:
            raise ApplyError(change)
        if _read_only_fs(target.directory):
            raise ApplyError(f"{target.directory} is now on a read-only file system")
        if not os.access(target.path, os.W_OK):
            raise ApplyError("the original is read-only")
        try:
            os.replace(reply.path, target.path)
        except OSError as exc:
            raise ApplyError(f"cannot replace it: {oserrors.why(exc, target.directory)}") from None
    finally:
        if locked:
            with contextlib.suppress(OSError):
                fcntl.flock(target.fd, fcntl.LOCK_UN)
    reply.close()
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        _fsync_dir(target.directory)


def _kept_name(base: str, stamp: str, attempt: int) -> str:
    suffix = f"{KEPT_INFIX}{stamp}" + (f"-{attempt}" if attempt else "")
    return short_name(base, _NAME_MAX - len(os.fsencode(suffix))) + suffix


def _rename_in_place(reply: ReplyFile, base: str, stamp: str) -> str:
    """Give the reply file its kept name in its own directory; OSError if
    that directory cannot be changed."""
    directory = os.path.dirname(reply.path)
    for attempt in range(1000):
        final = os.path.join(directory, _kept_name(base, stamp, attempt))
        try:
            os.link(reply.path, final)  # fails if *final* exists: never clobber
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # No hard links here (e.g. vfat): rename, after checking the name.
            if os.path.lexists(final):
                continue
            os.rename(reply.path, final)
            return final
        with contextlib.suppress(OSError):
            os.unlink(reply.path)
        return final
    raise FileExistsError(errno.EEXIST, "a thousand kept copies this second")


def _copy_fd(src: int, dst: int) -> None:
    """All of *src* (from offset 0) to *dst*, in the kernel when it can."""
    size = os.fstat(src).st_size
    offset = 0
    try:
        while offset < size:
            n = os.copy_file_range(src, dst, size - offset, offset, offset)
            if n == 0:
                return
            offset += n
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    while True:  # no copy_file_range between these file systems
        data = os.pread(src, 1 << 20, offset)
        if not data:
            return
        view = memoryview(data)
        while view:
            written = os.pwrite(dst, view, offset)
            view = view[written:]
            offset += written


def _copy_to_recovery(reply: ReplyFile, base: str, stamp: str) -> str:
    """Copy the reply, read through its open descriptor (works after its
    directory became read-only or was removed), into the recovery directory."""
    directory = recovery_dir()
    for attempt in range(1000):
        final = os.path.join(directory, _kept_name(base, stamp, attempt))
        try:
            out = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        try:
            _copy_fd(reply.fd, out)
            os.fsync(out)
        except OSError:
            os.close(out)
            with contextlib.suppress(OSError):
                os.unlink(final)
            raise
        os.close(out)
        return final
    raise FileExistsError(errno.EEXIST, "a thousand kept copies this second")


def keep(reply: ReplyFile, base: str, when: float | None = None) -> str:
    """Keep an unapplied reply under its documented name (*base* is the
    original's name; *when* the time in it, default now) and return where.
    Raises KeepError only when no copy could be made anywhere."""
    with contextlib.suppress(OSError):
        os.fsync(reply.fd)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    try:
        final = _rename_in_place(reply, base, stamp)
    except OSError as in_place:
        try:
            final = _copy_to_recovery(reply, base, stamp)
        except OSError as exc:
            still = reply.path if os.path.lexists(reply.path) else None
            reply.close()
            where = f"; it is still in {still}" if still else ""
            raise KeepError(
                f"it could not be kept beside the original "
                f"({oserrors.why(in_place, os.path.dirname(reply.path))}) nor in the "
                f"recovery directory ({oserrors.why(exc)}){where}"
            ) from None
        # The directory may be read-only now: then the hidden file stays.
        with contextlib.suppress(OSError):
            os.unlink(reply.path)
    reply.close()
    return final
