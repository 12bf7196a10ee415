"""Leftovers of a run that was killed (SIGKILL, a crash, a power cut) before it
could apply, keep or remove its reply file: ``.NAME.whonix-open-XXXXXXXX.part``
or ``.complete`` beside the file (or in the recovery directory).

How we know what a leftover holds (vm/editback.py): a reply file is renamed
``.complete`` only after the whole reply arrived and dom0 reported success, so
a ``.complete`` leftover holds a complete edit that was never applied; it is
kept as ``NAME.whonix-open-edited-<its time>`` (never applied: the original
may have changed since). A ``.part`` leftover was cut off while receiving, or
came with a failure, and is removed; so is an empty ``.new`` one (a run killed
between creating and locking it) once it is a minute old.

A run holds an exclusive flock on its reply file for as long as it has it: a
leftover whose lock we cannot take belongs to a live run (say, another window
editing the same file) and is left alone. Only files that one of this user's
runs recorded (vm/replyrecords.py: device, inode and name) are touched: a
look-alike that came with an archive or was planted is ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import time
from dataclasses import dataclass

from whonix_open.vm import editback, oserrors, replyrecords
from whonix_open.vm.targets import open_dir

_LEFTOVER_RE = re.compile(
    r"\.(?P<name>.+)" + re.escape(editback.TEMP_INFIX)
    + r"[a-z0-9_]{8}\.(?P<state>part|complete|new)",
    re.DOTALL,
)
# A ".new" file is locked and renamed within microseconds of its creation:
# one this old and still unlocked was left by a run killed in between.
NEW_FILE_AGE = 60.0  # seconds


@dataclass
class Found:
    path: str
    complete: bool
    size: int
    kept: str | None = None  # where a complete one is kept now
    error: str | None = None  # why it could not be handled

    def message(self) -> str:
        if self.error:
            return (
                f"{self.path}: a leftover of an earlier whonix-open run could not be "
                f"handled: {self.error}"
            )
        if self.complete:
            return (
                f"an earlier whonix-open run was stopped before it could save a complete "
                f"edit ({self.size} bytes): it is kept at {self.kept}, not applied to the "
                "original"
            )
        return (
            f"removed {self.path}: an incomplete reply ({self.size} bytes) left by an "
            "earlier whonix-open run that was stopped while receiving it"
        )


def _claim(directory: str, entry: str, name: str, state: str) -> Found | None:
    """Handle one leftover if no live run holds it; None when it is not ours
    to touch (in use, gone, not a regular file of this user)."""
    try:
        dir_fd = open_dir(directory)
    except OSError:
        return None
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        os.close(dir_fd)
        return None
    reply = editback.ReplyFile(dir_fd=dir_fd, name=entry, fd=fd, beside_original=False)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        if not replyrecords.is_ours(st, entry):
            return None  # not made by a whonix-open run of this user
        if state == "new" and (st.st_size or time.time() - st.st_mtime < NEW_FILE_AGE):
            return None  # possibly a live run about to lock it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # a live run has it (or no flock here: cannot tell)
        with contextlib.suppress(OSError):
            now = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return _handle(reply, name, state == "complete", st)
        return None  # renamed away by its run just before it let go
    finally:
        reply.close()


def _handle(
    reply: editback.ReplyFile, name: str, complete: bool, st: os.stat_result
) -> Found:
    found = Found(path=reply.path, complete=complete and st.st_size > 0, size=st.st_size)
    if found.complete:
        try:
            found.kept = editback.keep(reply, name, when=st.st_mtime)
        except editback.KeepError as exc:
            found.error = str(exc)
        return found
    try:
        os.unlink(reply.name, dir_fd=reply.dir_fd)
    except OSError as exc:
        found.error = f"it cannot be removed: {oserrors.why(exc, reply.directory)}"
        return found
    replyrecords.forget(st)
    return found


def scan(directory: str, name: str | None = None) -> list[Found]:
    """Handle the leftovers in *directory*: all of them, or only those of the
    file called *name*."""
    wanted = None if name is None else editback.short_name(name)
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    found = []
    for entry in entries:
        match = _LEFTOVER_RE.fullmatch(entry)
        if match is None or (wanted is not None and match["name"] != wanted):
            continue
        base = match["name"] if name is None else name
        result = _claim(directory, entry, base, match["state"])
        if result is not None:
            found.append(result)
    return found


def existing_recovery_dir() -> str | None:
    """The recovery directory if it exists (a scan must not create it)."""
    from xdg.BaseDirectory import xdg_data_home

    path = os.path.join(xdg_data_home, "whonix-open", "recovered")
    return path if os.path.isdir(path) else None


def scan_for_file(path: str) -> list[Found]:
    """The leftovers of the file at *path*: beside it and in the recovery
    directory."""
    name = os.path.basename(path)
    found = scan(os.path.dirname(path), name)
    recovery = existing_recovery_dir()
    if recovery and os.path.realpath(recovery) != os.path.dirname(path):
        found += scan(recovery, name)
    return found
