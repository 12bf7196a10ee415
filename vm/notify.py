"""Desktop notifications for when nobody watches stderr (a file manager or
another program started us).

`notify()` is the single seam the CLI calls and tests replace: it tries
`notify-send` on PATH, then libnotify through gi, and returns which one worked
(None when neither exists). The caller always writes to stderr as well, so a
failure is never silent even without a notification daemon.
"""

from __future__ import annotations

import shutil
import subprocess

APP_NAME = "whonix-open"
URGENCIES = ("low", "normal", "critical")
_NOTIFY_SEND_TIMEOUT = 10  # seconds; a hung notification daemon must not hang us


def _via_notify_send(summary: str, body: str, urgency: str) -> bool:
    program = shutil.which("notify-send")
    if program is None:
        return False
    try:
        # A list argv: the file name in *body* never meets a shell. "--" so a
        # summary starting with "-" is not taken as an option.
        result = subprocess.run(
            [program, f"--app-name={APP_NAME}", f"--urgency={urgency}", "--", summary, body],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=_NOTIFY_SEND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _via_gi(summary: str, body: str, urgency: str) -> bool:
    try:  # imported here only: gi is slow to import and often absent
        import gi

        gi.require_version("Notify", "0.7")
        from gi.repository import Notify
    except (ImportError, ValueError):
        return False
    try:
        if not Notify.is_initted():
            Notify.init(APP_NAME)
        note = Notify.Notification.new(summary, body)
        note.set_urgency(getattr(Notify.Urgency, urgency.upper()))
        return bool(note.show())
    except Exception:  # noqa: BLE001 - any GLib error: fall back to stderr only
        return False


def notify(summary: str, body: str, urgency: str = "normal") -> str | None:
    """Show a desktop notification; the name of the backend used, or None."""
    if urgency not in URGENCIES:
        raise ValueError(f"urgency must be one of {URGENCIES}")
    if _via_notify_send(summary, body, urgency):
        return "notify-send"
    if _via_gi(summary, body, urgency):
        return "gi"
    return None
