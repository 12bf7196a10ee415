"""Receiving the disposable's reply and putting it in place without ever
losing either the original or the edit.

- The reply is written to a hidden temp file in the original's directory (so
  that the final rename is atomic), or, when that directory is not writable,
  straight into the recovery directory.
- `apply()` replaces the original only as the last step: mode bits copied,
  data fsync'ed, os.replace, directory fsync'ed.
- `keep()` is for every reply that cannot be applied (dom0 failed, the call was
  interrupted, the original changed meanwhile, ...): it is renamed to
  ``NAME.whonix-open-edited-<timestamp>`` next to the original, or into
  ``$XDG_DATA_HOME/whonix-open/recovered/`` when that directory is not
  writable, and the caller tells the user where.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from dataclasses import dataclass

from whonix_open.vm.header import cut_front
from whonix_open.vm.targets import Target, unchanged_since

KEPT_INFIX = ".whonix-open-edited-"
_NAME_MAX = 255
_TEMP_NAME_ROOM = 100  # bytes of the original name used in a temp file's name


class ApplyError(Exception):
    """The reply is fine but cannot replace the original (message says why)."""


@dataclass
class ReplyFile:
    path: str
    fd: int
    beside_original: bool  # False: it is already in the recovery directory

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def recovery_dir() -> str:
    """$XDG_DATA_HOME/whonix-open/recovered (pyxdg; imported only when needed),
    created private to the user."""
    from xdg.BaseDirectory import xdg_data_home

    path = os.path.join(xdg_data_home, "whonix-open", "recovered")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _short(name: str, room: int) -> str:
    return os.fsdecode(cut_front(os.fsencode(name), room))


def create_reply_file(target: Target) -> ReplyFile:
    """A new, empty, private (0600) file to receive the reply into."""
    prefix = "." + _short(os.path.basename(target.path), _TEMP_NAME_ROOM) + ".whonix-open-"
    try:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=target.directory)
        return ReplyFile(path=path, fd=fd, beside_original=True)
    except OSError:
        pass  # not writable (or full): the recovery directory still works
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=recovery_dir())
    return ReplyFile(path=path, fd=fd, beside_original=False)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply(target: Target, reply: ReplyFile) -> None:
    """Atomically replace the original with the reply, keeping its mode bits.
    Raises ApplyError (reply untouched) when that would not be safe."""
    if not reply.beside_original:
        raise ApplyError(f"the directory {target.directory} is not writable")
    if not unchanged_since(target):
        raise ApplyError("the original was changed or replaced here while it was open")
    if not os.access(target.path, os.W_OK):
        raise ApplyError("the original is read-only")
    os.fchmod(reply.fd, stat.S_IMODE(target.st.st_mode))
    os.fsync(reply.fd)
    reply.close()
    try:
        os.replace(reply.path, target.path)
    except OSError as exc:
        raise ApplyError(f"cannot replace it: {exc.strerror}") from None
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        _fsync_dir(target.directory)


def keep(target: Target, reply: ReplyFile) -> str:
    """Move an unapplied reply to its documented place; return that path."""
    reply_fd = reply.fd
    if reply_fd >= 0:
        with contextlib.suppress(OSError):
            os.fsync(reply_fd)
    reply.close()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.basename(target.path)
    directory = os.path.dirname(reply.path)
    for attempt in range(1000):
        suffix = f"{KEPT_INFIX}{stamp}" + (f"-{attempt}" if attempt else "")
        name = _short(base, _NAME_MAX - len(os.fsencode(suffix))) + suffix
        final = os.path.join(directory, name)
        try:
            os.link(reply.path, final)  # fails if *final* exists: never clobber
        except FileExistsError:
            continue
        except OSError:
            # No hard links here (e.g. vfat): rename, after checking the name.
            if os.path.lexists(final):
                continue
            os.rename(reply.path, final)
            return final
        os.unlink(reply.path)
        return final
    return reply.path  # a thousand kept copies this second: leave the temp name
