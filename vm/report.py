"""Where the user hears about results: stderr always, and a desktop
notification too when stderr is not a terminal (we were started by a file
manager, whose stderr nobody reads).

Messages carry file names, and file names come from untrusted places (a
download, a mail attachment): before a message is shown, control characters
(a newline, an ESC starting a terminal escape sequence), bidirectional-text
overrides (U+202E makes "evil<U+202E>fdp.exe" look like "evilexe.pdf") and bytes
that are not UTF-8 are replaced by visible escapes.
"""

from __future__ import annotations

import sys
import threading
import unicodedata
from typing import TextIO

from whonix_open.vm import notify

PROG = "whonix-open"


class Reporter:
    """Thread-safe: several files are opened at once and report as they end."""

    def __init__(
        self,
        *,
        quiet: bool = False,
        use_notifications: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.interactive = _isatty(self.stream)
        self.use_notifications = use_notifications and not self.interactive
        self._lock = threading.Lock()

    def _emit(self, level: str, text: str, summary: str, urgency: str) -> None:
        text = printable(text)
        with self._lock:
            if self.interactive:
                self.stream.write("\r\033[K")  # over a progress line, if any
            print(f"{PROG}: {level}{text}", file=self.stream, flush=True)
            if self.use_notifications:
                # notify.notify looked up at call time: the seam tests replace.
                notify.notify(summary, text, urgency)

    def info(self, text: str, summary: str = "whonix-open") -> None:
        """A success or other good news; dropped by --quiet."""
        if not self.quiet:
            self._emit("", text, summary, "low")

    def warning(self, text: str, summary: str = "whonix-open: warning") -> None:
        self._emit("warning: ", text, summary, "normal")

    def error(self, text: str, summary: str = "whonix-open: error") -> None:
        self._emit("error: ", text, summary, "critical")

    def progress(self, line: str) -> None:
        """A transient progress line; only ever shown on a terminal."""
        if self.interactive and not self.quiet:
            with self._lock:
                self.stream.write(f"\r{printable(line)}\033[K")
                self.stream.flush()

    def end_progress(self) -> None:
        if self.interactive and not self.quiet:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()


# Unicode's explicit directional marks, embeddings, overrides and isolates.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def printable(text: str) -> str:
    """*text* with control characters, bidi controls and non-UTF-8 bytes
    (surrogate escapes) shown as backslash escapes, e.g. \\n, \\x1b, \\xff."""
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
