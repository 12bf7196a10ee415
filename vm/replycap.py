"""How much a disposable may send back for one file (the reply cap).

The disposable is hostile: without a bound, a 1 KiB original can come back as
gigabytes and fill the file system. The cap for one file is the smaller of

- the size limit: `--max-reply SIZE`, else `max_reply_size` in the config,
  else the default, DEFAULT_FACTOR times the original's size and at least
  DEFAULT_FLOOR (an edit seldom grows a file more than that; large media edits
  set it explicitly);
- the free space of the file system the reply is written to, less a reserve
  (`reserve()`) that is never used: re-checked while receiving, so that
  other writers filling the disk meanwhile stop the reply too.

Past the cap the reply is cut off, every byte of it removed and the original
left untouched (vm/opener.py; exit code 5).
"""

from __future__ import annotations

import os
import re

DEFAULT_FACTOR = 4
DEFAULT_FLOOR = 64 << 20  # bytes
RESERVE_FRACTION = 0.01  # of the file system, kept free at least
RESERVE_MAX_SMALL = 64 << 20  # ... and this much (at most a tenth on tiny file systems)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"\s*([0-9]+)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


class SizeError(ValueError):
    """A size setting that is not a size (the message says what is expected)."""


def parse_size(text: str) -> int:
    """'500M', '2G', '2GiB', '1048576' -> bytes (binary units); SizeError."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise SizeError(
            f"{text!r} is not a size (a number of bytes, or with K, M, G or T, e.g. 2G)"
        )
    value = int(match[1]) * _UNITS[match[2].upper()]
    if value <= 0:
        raise SizeError(f"{text!r} is not a size greater than zero")
    return value


def human(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]} {unit}iB"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size} bytes"


def default_limit(original_size: int) -> int:
    return max(DEFAULT_FACTOR * original_size, DEFAULT_FLOOR)


def reserve(st: os.statvfs_result) -> int:
    """Bytes of the file system a reply never uses."""
    total = st.f_blocks * st.f_frsize
    return max(int(total * RESERVE_FRACTION), min(RESERVE_MAX_SMALL, total // 10))


def room(fd: int) -> int:
    """Bytes that may still be written to the file system of *fd* without
    eating into its reserve (0 when none; a huge number when unknown)."""
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return 1 << 62  # no statvfs here: only the size limit applies
    if st.f_blocks == 0:  # e.g. some FUSE file systems report nothing
        return 1 << 62
    return max(0, st.f_bavail * st.f_frsize - reserve(st))


class ReplyCap:
    """The bound for one reply written to *fd*. `allows(total)` is asked before
    each write with the size the file would then have."""

    RECHECK = 8 << 20  # re-read the free space after this many bytes

    def __init__(self, fd: int, limit: int, explicit: bool) -> None:
        self.fd = fd
        self.limit = limit
        self.explicit = explicit
        self.reason: str | None = None  # set once the cap was hit
        self._room_at = 0  # file size when the room was last read
        self._room = room(fd)

    def allows(self, total: int) -> bool:
        if total > self.limit:
            setting = "the --max-reply/max_reply_size setting" if self.explicit else (
                "the default cap for this file (4 times its size, at least 64 MiB; "
                "raise it with --max-reply SIZE or max_reply_size in the config)")
            self.reason = f"more than {human(self.limit)}, {setting}"
            return False
        if total - self._room_at >= self.RECHECK or total - self._room_at > self._room:
            # Written so far is already on the file system: room left from here.
            self._room = room(self.fd)
            self._room_at = self._written()
        if total - self._room_at > self._room:
            self.reason = (
                "more than the free space of the file system it was written to allows "
                "(whonix-open never fills a file system: it keeps 1% of it, at least "
                "64 MiB or a tenth, free)")
            return False
        return True

    def _written(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return 0
