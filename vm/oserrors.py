"""Why a file operation failed, in words for the user (never an exception
repr): the errno decides, and ENOSPC is told apart into "full" and "no free
inodes", which look the same to the program but need different fixes."""

from __future__ import annotations

import errno
import os


def _no_free_inodes(directory: str) -> bool:
    try:
        vfs = os.statvfs(directory)
    except OSError:
        return False
    return vfs.f_files > 0 and vfs.f_favail == 0


def why(exc: BaseException, directory: str | None = None) -> str:
    """A short clause saying why *exc* happened, naming *directory* if given."""
    where = f"the directory {directory}" if directory else "the directory"
    if not isinstance(exc, OSError):
        return "an unexpected internal error (a bug in whonix-open; please report it)"
    code = exc.errno
    if code == errno.ENOSPC:
        if directory and _no_free_inodes(directory):
            return (
                f"the file system of {where} has no free inodes left (no room for "
                "another file, although there may be free space)"
            )
        return f"no space left on the file system of {where}"
    if code == errno.EDQUOT:
        return f"your disk quota is exhausted on the file system of {where}"
    if code in (errno.EACCES, errno.EPERM):
        return f"{where} is not writable (permission denied)"
    if code == errno.EROFS:
        return f"{where} is on a read-only file system"
    if code == errno.ENOENT:
        return f"{where} was removed or renamed"
    if code == errno.EIO:
        return "an input/output error (the disk or file system is failing)"
    text = exc.strerror or os.strerror(code or 0) or "an unknown error"
    return f"{text[:1].lower()}{text[1:]}"
