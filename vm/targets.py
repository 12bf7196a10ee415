"""Checking the FILE arguments before any qrexec call.

Each argument is resolved (a symlink names the file it points to, which is what
an edit must update), must be an existing regular file, and is opened for
reading here, so the file we stream is exactly the one we checked.

The original's directory is held open from here on (O_PATH) and the file is
opened relative to it with O_NOFOLLOW: every later step of the edit-back
(reply file, checks, rename; vm/editback.py) works on that descriptor with
*at calls, so a folder on the path that is swapped or renamed meanwhile (by
another local user who owns it) can never redirect a byte. Messages name the
directory where it really is now (`Target.directory`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass


class TargetError(Exception):
    """A FILE argument that cannot be opened (the message names it)."""


@dataclass
class Target:
    arg: str  # as the user gave it (used in messages and for the header name)
    path: str  # the real file (symlinks resolved) when it was opened
    fd: int  # open for reading
    st: os.stat_result  # of the open file, to notice a change while it was away
    dir_fd: int = -1  # O_PATH descriptor of its directory: where edit-back writes
    name: str = ""  # its name in that directory

    @property
    def size(self) -> int:
        return self.st.st_size

    @property
    def directory(self) -> str:
        """Where its directory is now (it may have been moved meanwhile)."""
        return place(self.dir_fd) if self.dir_fd >= 0 else os.path.dirname(self.path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.close_dir()

    def close_dir(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


def open_dir(path: str) -> int:
    """An O_PATH descriptor of the directory *path* (*at calls only)."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def place(dir_fd: int) -> str:
    """The path of an open directory as the kernel knows it now."""
    try:
        where = os.readlink(f"/proc/self/fd/{dir_fd}")
    except OSError:
        return "(a directory whose path is unknown)"
    if where.endswith(" (deleted)"):
        return where[: -len(" (deleted)")] + " (removed meanwhile)"
    return where


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return (
            "is a pipe (e.g. /dev/stdin fed by another program) or a named pipe, not "
            "a regular file; save the data to a file first"
        )
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is not a regular file"


def prepare(arg: str) -> Target:
    """Resolve, check and open one FILE argument; raise TargetError if it
    cannot be opened in a disposable."""
    if arg == "":
        raise TargetError("an empty file name was given")
    # The argument itself first, as the kernel resolves it: realpath() would
    # quietly drop a trailing "/" or "/." ("a.txt/" must fail: Not a
    # directory) and cannot follow /dev/stdin to a pipe.
    try:
        st = os.stat(arg)
    except FileNotFoundError:
        if os.path.islink(arg):
            raise TargetError(f"{arg}: is a broken symbolic link") from None
        raise TargetError(f"{arg}: no such file") from None
    except NotADirectoryError:
        raise TargetError(
            f"{arg}: Not a directory (a path ending in '/' or '/.', or going "
            "through a file, names a directory)"
        ) from None
    except OSError as exc:
        raise TargetError(f"{arg}: cannot check it: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TargetError(f"{arg}: {_kind(st.st_mode)}")
    path = os.path.realpath(arg)
    directory, name = os.path.split(path)
    try:
        dir_fd = open_dir(directory)
    except OSError as exc:
        raise TargetError(f"{arg}: cannot open its folder: {exc.strerror}") from None
    try:
        # O_NONBLOCK: never hang on a FIFO swapped in since the stat above.
        # O_NOFOLLOW: realpath() resolved every link; one now is a swap.
        fd = os.open(
            name,
            os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW,
            dir_fd=dir_fd,
        )
    except PermissionError:
        os.close(dir_fd)
        raise TargetError(f"{arg}: not readable (permission denied)") from None
    except OSError as exc:
        os.close(dir_fd)
        if exc.errno == errno.ELOOP:
            raise TargetError(f"{arg}: was replaced by a symbolic link while being opened") \
                from None
        raise TargetError(f"{arg}: cannot open it: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        os.close(dir_fd)
        raise TargetError(f"{arg}: {_kind(st.st_mode)}")
    os.set_blocking(fd, True)
    return Target(arg=arg, path=path, fd=fd, st=st, dir_fd=dir_fd, name=name)


def change_since(target: Target) -> str | None:
    """None if the file of that name in the original's directory (the one we
    hold open) is still the one we sent, unmodified (same inode, size and
    mtime): then an edit may replace it without losing a change made here
    meanwhile. Otherwise what happened, in words."""
    try:
        now = os.stat(target.name, dir_fd=target.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "the original was removed or moved away (or its directory was) while it was open"
    except OSError as exc:
        return f"the original cannot be checked any more ({exc.strerror})"
    before = target.st
    if (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (
        before.st_dev,
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    ):
        return None
    return (
        "the original was changed or replaced here while it was open (for example "
        "another whonix-open saved its edit of the same file first)"
    )
