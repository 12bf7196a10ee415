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
  A kept copy is always mode 0600 with no ACL: it is the disposable's
  content, and the reason it was not applied may be who could read it.
- Every step works on the original's directory as held open since the file
  was checked (vm/targets.py), with *at calls: a folder swapped meanwhile
  cannot redirect the reply.
- Permissions: the replaced file never gets more than the original had: its
  permission bits without setuid, setgid or sticky, its group, and its ACL
  exactly (or none when it had none). When the group or the ACL cannot be
  set, the edit is not applied but kept (0600) and the reason said.
- Each reply file is recorded in the user's state directory while it exists
  (vm/replyrecords.py), so a leftover scan offers only files of our own runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass

from whonix_open.vm import oserrors, replyrecords
from whonix_open.vm.header import cut_front
from whonix_open.vm.targets import Target, change_since, open_dir, place

KEPT_INFIX = ".whonix-open-edited-"
TEMP_INFIX = ".whonix-open-"
NEW, PART, COMPLETE = ".new", ".part", ".complete"
_NAME_MAX = 255
# Bytes of the original name in a temp file's name: "." + name + TEMP_INFIX +
# 8 random + ".complete" stays within NAME_MAX.
TEMP_NAME_ROOM = _NAME_MAX - 1 - len(TEMP_INFIX) - 8 - len(COMPLETE)
LOCK_WAIT = 30.0  # seconds to wait for another program's lock on the original
_LOCK_POLL = 0.02
_RANDOM = "abcdefghijklmnopqrstuvwxyz0123456789_"
ACL_XATTR = "system.posix_acl_access"
KEPT_MODE = 0o600


class ApplyError(Exception):
    """The reply is fine but cannot replace the original (message says why)."""


class KeepError(Exception):
    """No copy of the reply could be kept anywhere (message says why)."""


@dataclass
class ReplyFile:
    dir_fd: int  # its directory (O_PATH, ours to close)
    name: str  # its name there
    fd: int  # open, and flock'ed, until the file has its final name or is gone
    beside_original: bool  # False: it is already in the recovery directory
    why_elsewhere: str | None = None  # why not beside the original

    @property
    def path(self) -> str:
        """Where it is now, for messages."""
        return os.path.join(place(self.dir_fd), self.name)

    @property
    def directory(self) -> str:
        return place(self.dir_fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def discard(self) -> None:
        # Unlink before close: while we hold the lock no scan touches it.
        if self.fd >= 0:
            replyrecords.forget_fd(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.name, dir_fd=self.dir_fd)
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


def _create_locked(dir_fd: int, base: str) -> tuple[int, str]:
    """A new 0600 file in *dir_fd*, locked, recorded, named ``.part``."""
    prefix = "." + short_name(base) + TEMP_INFIX
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(100):
        stem = prefix + "".join(secrets.choice(_RANDOM) for _ in range(8))
        try:
            fd = os.open(stem + NEW, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(errno.EEXIST, "no unused temporary name")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new file: never blocks
        replyrecords.record(fd, stem)
        os.rename(stem + NEW, stem + PART, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        replyrecords.forget_fd(fd)
        with contextlib.suppress(OSError):
            os.unlink(stem + NEW, dir_fd=dir_fd)
        os.close(fd)
        raise
    return fd, stem + PART


def create_part_file(target: Target, base: str) -> ReplyFile:
    """A new, private, locked ``.BASE.whonix-open-XXXXXXXX.part`` in the
    original's directory as held open (--convert's output while it is written;
    a killed run's is removed by the leftover scan). Raises OSError."""
    dir_fd = os.dup(target.dir_fd)
    try:
        fd, name = _create_locked(dir_fd, base)
    except OSError:
        os.close(dir_fd)
        raise
    return ReplyFile(dir_fd=dir_fd, name=name, fd=fd, beside_original=True)


def create_reply_file(target: Target) -> ReplyFile:
    """A new, empty, private (0600), locked file to receive the reply into,
    in the original's directory as held open. Raises OSError when neither
    there nor the recovery directory works."""
    dir_fd = os.dup(target.dir_fd)
    try:
        fd, name = _create_locked(dir_fd, target.name)
        return ReplyFile(dir_fd=dir_fd, name=name, fd=fd, beside_original=True)
    except OSError as exc:  # not writable, full, no inodes: recovery dir
        os.close(dir_fd)
        why = oserrors.why(exc, target.directory)
    dir_fd = open_dir(recovery_dir())
    try:
        fd, name = _create_locked(dir_fd, target.name)
    except OSError:
        os.close(dir_fd)
        raise
    return ReplyFile(dir_fd=dir_fd, name=name, fd=fd, beside_original=False,
                     why_elsewhere=why)


def mark_complete(reply: ReplyFile) -> None:
    """The whole reply is here and dom0 said so: give it the name that tells
    a later leftover scan so, then write it to disk. Renamed first, so that a
    SIGKILL during a long fsync leaves a kept copy, not a removed one (a
    leftover is only ever kept, never applied). Best effort: a directory that
    became read-only keeps the ``.part`` name (apply or keep follow at once)."""
    if reply.name.endswith(PART):
        complete = reply.name[: -len(PART)] + COMPLETE
        with contextlib.suppress(OSError):
            os.rename(reply.name, complete, src_dir_fd=reply.dir_fd, dst_dir_fd=reply.dir_fd)
            reply.name = complete
    os.fsync(reply.fd)


def _fsync_dir(dir_fd: int) -> None:
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
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


def _read_only_fs(dir_fd: int) -> bool:
    try:
        return bool(os.statvfs(dir_fd).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _acl(fd: int) -> bytes | None:
    """The file's access ACL (the raw xattr), None when it has none or the
    file system has no ACLs."""
    try:
        return os.getxattr(fd, ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _drop_acl(fd: int) -> None:
    """Remove an access ACL (e.g. inherited from a default ACL)."""
    try:
        os.removexattr(fd, ACL_XATTR)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def _match_permissions(target: Target, reply: ReplyFile) -> None:
    """Give the reply the original's permissions, never more: its mode bits
    without setuid/setgid/sticky, its group, its ACL exactly (or none).
    ApplyError when one of them cannot be set."""
    st = os.fstat(target.fd)
    now = os.fstat(reply.fd)
    if now.st_gid != st.st_gid:
        try:
            os.fchown(reply.fd, -1, st.st_gid)
        except OSError as exc:
            raise ApplyError(
                f"the original's group (gid {st.st_gid}) could not be kept on the new "
                f"version ({exc.strerror}), and another group could read it"
            ) from None
    os.fchmod(reply.fd, stat.S_IMODE(st.st_mode) & 0o777)
    try:
        acl = _acl(target.fd)
        if acl is None:
            _drop_acl(reply.fd)
        else:
            os.setxattr(reply.fd, ACL_XATTR, acl)
    except OSError as exc:
        raise ApplyError(
            f"the original's access control list (ACL) could not be copied exactly "
            f"({exc.strerror})"
        ) from None


def apply(target: Target, reply: ReplyFile, stop: threading.Event | None = None) -> None:
    """Atomically replace the original with the reply, with the original's
    permissions (never more). Raises ApplyError (reply untouched, apart from
    its mode: keep() makes it 0600 again) when that would not be safe, or when
    *stop* is set while waiting for the lock."""
    if not reply.beside_original:
        raise ApplyError(reply.why_elsewhere or "no file could be made beside it")
    _match_permissions(target, reply)
    os.fsync(reply.fd)  # before the lock: keep the locked part short
    locked = _lock_original(target.fd, stop)
    try:
        change = change_since(target)
        if change:
            raise ApplyError(change)
        if _read_only_fs(target.dir_fd):
            raise ApplyError(f"{target.directory} is now on a read-only file system")
        if not os.access(target.name, os.W_OK, dir_fd=target.dir_fd):
            raise ApplyError("the original is read-only")
        try:
            os.replace(reply.name, target.name, src_dir_fd=reply.dir_fd,
                       dst_dir_fd=target.dir_fd)
        except OSError as exc:
            raise ApplyError(f"cannot replace it: {oserrors.why(exc, target.directory)}") from None
    finally:
        if locked:
            with contextlib.suppress(OSError):
                fcntl.flock(target.fd, fcntl.LOCK_UN)
    replyrecords.forget_fd(reply.fd)
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        _fsync_dir(target.dir_fd)
    reply.close()


def _kept_name(base: str, stamp: str, attempt: int) -> str:
    suffix = f"{KEPT_INFIX}{stamp}" + (f"-{attempt}" if attempt else "")
    return short_name(base, _NAME_MAX - len(os.fsencode(suffix))) + suffix


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _rename_in_place(reply: ReplyFile, base: str, stamp: str) -> str:
    """Give the reply file its kept name in its own directory (the one held
    open); its new name there, or OSError if that directory cannot be changed."""
    for attempt in range(1000):
        final = _kept_name(base, stamp, attempt)
        try:
            # fails if *final* exists: never clobber
            os.link(reply.name, final, src_dir_fd=reply.dir_fd, dst_dir_fd=reply.dir_fd,
                    follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # No hard links here (e.g. vfat): rename, after checking the name.
            if _exists(final, reply.dir_fd):
                continue
            os.rename(reply.name, final, src_dir_fd=reply.dir_fd, dst_dir_fd=reply.dir_fd)
            return final
        with contextlib.suppress(OSError):
            os.unlink(reply.name, dir_fd=reply.dir_fd)
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
    dir_fd = open_dir(directory)
    try:
        for attempt in range(1000):
            name = _kept_name(base, stamp, attempt)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                out = os.open(name, flags, KEPT_MODE, dir_fd=dir_fd)
            except FileExistsError:
                continue
            try:
                _copy_fd(reply.fd, out)
                os.fsync(out)
            except OSError:
                os.close(out)
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                raise
            os.close(out)
            return os.path.join(place(dir_fd), name)
    finally:
        os.close(dir_fd)
    raise FileExistsError(errno.EEXIST, "a thousand kept copies this second")


def _make_private(fd: int) -> None:
    """A kept copy is 0600, no ACL (best effort: a file system without
    chmod, such as vfat, has its own fixed rules)."""
    with contextlib.suppress(OSError):
        os.fchmod(fd, KEPT_MODE)
    with contextlib.suppress(OSError):
        _drop_acl(fd)


def keep(reply: ReplyFile, base: str, when: float | None = None) -> str:
    """Keep an unapplied reply under its documented name (*base* is the
    original's name; *when* the time in it, default now), mode 0600, and
    return where. Raises KeepError only when no copy could be made anywhere."""
    _make_private(reply.fd)
    with contextlib.suppress(OSError):
        os.fsync(reply.fd)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    directory = reply.directory
    try:
        final = os.path.join(directory, _rename_in_place(reply, base, stamp))
    except OSError as in_place:
        try:
            final = _copy_to_recovery(reply, base, stamp)
        except OSError as exc:
            still = reply.path if _exists(reply.name, reply.dir_fd) else None
            reply.close()  # its record stays: --recover offers it later
            where = f"; it is still in {still}" if still else ""
            raise KeepError(
                f"it could not be kept beside the original "
                f"({oserrors.why(in_place, directory)}) nor in the "
                f"recovery directory ({oserrors.why(exc)}){where}"
            ) from None
        # The directory may be read-only now: then the hidden file stays.
        with contextlib.suppress(OSError):
            os.unlink(reply.name, dir_fd=reply.dir_fd)
    replyrecords.forget_fd(reply.fd)
    reply.close()
    return final
