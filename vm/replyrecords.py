"""Which hidden reply files this user's whonix-open runs made.

A leftover scan (vm/leftovers.py) must offer only what whonix-open itself
left: a ``.NAME.whonix-open-XXXXXXXX.complete`` file that came with an
extracted archive, or that another user planted in a shared folder, is not
an edit of ours. So every reply file gets a record in the user's state
directory, ``$XDG_STATE_HOME/whonix-open/replies/<device>-<inode>``, holding
the file's name stem; the record goes when the file is applied, kept or
removed. Only a file whose device, inode and name match a record is ours.
Best effort: a record that cannot be written only means that a run killed
later is not offered for recovery (its file stays where it is).
"""

from __future__ import annotations

import contextlib
import os


def records_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "whonix-open", "replies")


def _record_path(st: os.stat_result) -> str:
    return os.path.join(records_dir(), f"{st.st_dev}-{st.st_ino}")


def record(fd: int, stem: str) -> None:
    """Remember that the file open as *fd*, named *stem* + a state suffix,
    is one of ours."""
    with contextlib.suppress(OSError):
        os.makedirs(records_dir(), mode=0o700, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(_record_path(os.fstat(fd)), flags, 0o600)
        try:
            os.write(out, os.fsencode(stem))
        finally:
            os.close(out)


def forget(st: os.stat_result) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_record_path(st))


def forget_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        forget(os.fstat(fd))


def is_ours(st: os.stat_result, entry: str) -> bool:
    """Whether the file *entry* (stat *st*) was made by one of our runs."""
    try:
        with open(_record_path(st), "rb") as fh:
            stem = os.fsdecode(fh.read(4096))
    except OSError:
        return False
    return bool(stem) and entry.startswith(stem) and entry[len(stem):] in (
        ".new", ".part", ".complete")
