"""Desktop notifications for when nobody watches stderr (a file manager or
another program started us).

`notify()` is the single seam the CLI calls and tests replace: it tries
`notify-send` on PATH, then libnotify through gi, and returns which one worked
(None when neither exists). The caller always writes to stderr as well, so a
failure is never silent even without a notification daemon.

Callers pass plain text. The notification body is markup for most daemons
(the "body-markup" capability: xfce4-notifyd, GNOME Shell, KDE, dunst), so a
file name like ``a<b>&c.pdf`` is escaped here, and text that is not valid
UTF-8 (a non-UTF-8 file name arrives as surrogate escapes) is made valid:
notify-send aborts on invalid UTF-8 and D-Bus refuses it.
"""

from __future__ import annotations

import html
import shutil
import subprocess

APP_NAME = "whonix-open"
URGENCIES = ("low", "normal", "critical")
_NOTIFY_SEND_TIMEOUT = 10  # seconds; a hung notification daemon must not hang us


def _via_notify_send(summary: str, body: str, urgency: str,
                     options: tuple[str, ...] = ()) -> bool | str:
    """True (or, with --print-id among *options*, the id it printed) when
    notify-send showed it; False otherwise."""
    program = shutil.which("notify-send")
    if program is None:
        return False
    try:
        # A list argv: the file name in *body* never meets a shell. "--" so a
        # summary starting with "-" is not taken as an option. notify-send
        # undoes C escapes in the body (g_strcompress: backslash-n becomes a
        # newline, backslash-x an "x"), so backslashes are doubled to survive.
        sent_body = body.replace("\\", "\\\\")
        result = subprocess.run(
            [program, f"--app-name={APP_NAME}", f"--urgency={urgency}", *options, "--",
             summary, sent_body],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=_NOTIFY_SEND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if result.returncode != 0:
        return False
    shown = (result.stdout or b"").decode("ascii", "replace").strip()
    return shown if "--print-id" in options and shown.isdigit() else True


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


def _valid_utf8(text: str) -> str:
    """*text* with every byte that is not UTF-8 shown as a visible escape."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def notify(summary: str, body: str, urgency: str = "normal") -> str | None:
    """Show a desktop notification of plain-text *summary* and *body*; the
    name of the backend used, or None."""
    if urgency not in URGENCIES:
        raise ValueError(f"urgency must be one of {URGENCIES}")
    summary = _valid_utf8(summary)  # plain text by the spec: no escaping
    body = html.escape(_valid_utf8(body), quote=False)
    if _via_notify_send(summary, body, urgency):
        return "notify-send"
    if _via_gi(summary, body, urgency):
        return "gi"
    return None


def progress(summary: str, body: str, replaces: str | None = None) -> str | None:
    """A progress notification that replaces the earlier one with the id
    *replaces* (notify-send --print-id/--replace-id, libnotify >= 0.7.9: Debian
    12 and later) instead of piling up; its id, or None (no notify-send, or one
    without ids: then each update is a notification of its own)."""
    options = ("--print-id",) + ((f"--replace-id={replaces}",) if replaces else ())
    shown = _via_notify_send(_valid_utf8(summary), html.escape(_valid_utf8(body), quote=False),
                             "low", options)
    return shown if isinstance(shown, str) else None
