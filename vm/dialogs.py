"""The small dialogs of the link handler and of "Open in disposable...", with
the dialog program the desktop has (DESIGN.md "Dialogs"):

- KDE Plasma and LXQt: kdialog first (a Qt dialog that matches the desktop's
  theme; LXQt has no dialog tool of its own), else zenity;
- everything else (Xfce - Whonix's desktop -, GNOME, ...): zenity first (GTK,
  installed with Xfce/GNOME), else kdialog.

Every dialog fails closed: Esc, Cancel, closing the window, a missing dialog
program or any error all mean "do nothing"; text from outside (a link, a file
name) is shown escaped (no Pango/Qt markup) and shortened.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import NamedTuple

TITLE = "whonix-open"
QT_DESKTOPS = ("KDE", "LXQT")
# (tag, label, profile, view_only) - the chooser's choices, in order
CHOICES = (
    ("tor-view", "Tor, view only", "tor", True),
    ("tor-edit", "Tor, edit (changes come back)", "tor", False),
    ("offline-view", "Offline, view only", "offline", True),
    ("offline-edit", "Offline, edit (changes come back)", "offline", False),
)
REMEMBER = "Remember for this qube"
JUST_ONCE = "Just this time"


class Choice(NamedTuple):
    profile: str
    view_only: bool
    remember: bool


def dialog_program(env: Mapping[str, str] | None = None) -> str | None:
    """The dialog program to use, or None if there is none."""
    env = os.environ if env is None else env
    desktops = env.get("XDG_CURRENT_DESKTOP", "").upper().split(":")
    order = ("kdialog", "zenity") if any(d in QT_DESKTOPS for d in desktops) \
        else ("zenity", "kdialog")
    for name in order:
        if shutil.which(name, path=env.get("PATH")):
            return name
    return None


def _zenity_plain(text: str) -> str:
    """*text* for zenity's --text, which unescapes backslash sequences
    (g_strcompress: "\\n" -> newline) even with --no-markup: backslashes are
    doubled so that they show as they are."""
    return text.replace("\\", "\\\\")


def _zenity_markup(text: str) -> str:
    """*text* for a zenity --text that is Pango markup whatever the options
    (--list ignores --no-markup): Pango-escaped, then as _zenity_plain()."""
    return _zenity_plain(html.escape(text, quote=False))


def why_cannot_ask(env: Mapping[str, str] | None = None) -> str | None:
    """Why no dialog can be shown here, in words; None if one can."""
    env = os.environ if env is None else env
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return "there is no display to show a dialog on (DISPLAY and WAYLAND_DISPLAY are unset)"
    if dialog_program(env) is None:
        return "no dialog program is installed (zenity or kdialog)"
    return None


def yes_no(question: str, program: str | None = None) -> bool:
    """Ask a plain-text yes/no question; False for No, Esc, or no dialog.
    Nothing of the dialog program reaches our stderr (a terminal)."""
    if why_cannot_ask() is not None:
        return False
    program = program or dialog_program()
    if program == "zenity":
        return _run(["zenity", "--question", f"--title={TITLE}", "--no-markup",
                     "--width=480", f"--text={_zenity_plain(question)}"])[0] == 0
    if program == "kdialog":
        return _run(["kdialog", "--title", TITLE, "--yesno", html.escape(question)])[0] == 0
    return False


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, check=False)
    except OSError:
        return 255, ""
    return done.returncode, done.stdout.strip()


def confirm_link(host: str, lines: list[str], program: str | None = None) -> bool:
    """Ask before a link is opened: its *host* first and whole (the xn-- form
    of an international name, as it is sent), then the whole link in *lines*
    (checked links: printable ASCII only; nothing left out)."""
    program = program or dialog_program()
    question = "Open this link in a Tor disposable?"
    idn = ("\n(an international domain name, shown in its xn-- form)"
           if any(label.startswith("xn--") for label in host.lower().split(".")) else "")
    detail = ("It opens in a fresh Whonix disposable whose Tor gateway dom0 checks "
              "first; the disposable is destroyed when the browser closes.")
    link = "\n".join(lines)
    if program == "zenity":
        text = f"{question}\n\nHost: {host}{idn}\n\nThe whole link:\n{link}\n\n{detail}"
        code, _ = _run(["zenity", "--question", f"--title={TITLE}", "--no-markup",
                        "--ok-label=Open", "--cancel-label=Cancel", "--width=560",
                        f"--text={_zenity_plain(text)}"])
        return code == 0
    if program == "kdialog":
        text = (f"{html.escape(question)}<br><br>Host: <b>{html.escape(host)}</b>"
                f"{html.escape(idn).replace(chr(10), '<br>')}<br><br>The whole link:<br>"
                f"<tt>{html.escape(link).replace(chr(10), '<br>')}</tt><br><br>"
                f"{html.escape(detail)}")
        code, _ = _run(["kdialog", "--title", TITLE, "--yes-label", "Open", "--no-label",
                        "Cancel", "--yesno", text])
        return code == 0
    return False


def choose(shown: str, preset: tuple[str, bool] = ("tor", True),
           program: str | None = None) -> Choice | None:
    """The network and mode for "Open in disposable..." (None: cancelled).
    *shown*: what is being opened (escaped, shortened); *preset*: the
    preselected (profile, view_only)."""
    program = program or dialog_program()
    text = f"Open in a new Whonix disposable:\n{shown}"
    if program == "zenity":
        # A plain list (keyboard: arrows, Return), the preset first and selected.
        ordered = sorted(CHOICES, key=lambda c: (c[2], c[3]) != preset)
        rows = [value for tag, label, _p, _v in ordered for value in (tag, label)]
        code, out = _run(["zenity", "--list", f"--title={TITLE}", "--no-markup",
                          f"--text={_zenity_markup(text)}", "--column=tag",
                          "--column=Network and mode",
                          "--hide-column=1", "--print-column=1", "--ok-label=Next",
                          "--width=420", "--height=300", *rows])
        if code != 0:
            return None
        picked = out
        code, out = _run(["zenity", "--question", f"--title={TITLE}", "--no-markup",
                          "--text=Use this choice for every file from now on?",
                          f"--ok-label={JUST_ONCE}", "--cancel-label=Cancel",
                          f"--extra-button={REMEMBER}"])
        if code == 0:
            remember = False
        elif out == REMEMBER:
            remember = True
        else:
            return None
    elif program == "kdialog":
        items: list[str] = []
        for tag, label, profile, view_only in CHOICES:
            items += [tag, label, "on" if (profile, view_only) == preset else "off"]
        code, picked = _run(["kdialog", "--title", TITLE, "--radiolist",
                             html.escape(text).replace("\n", "<br>"), *items])
        if code != 0:
            return None
        # Yes (the default button) = just this time, No = remember, Cancel/Esc = 2.
        code, _ = _run(["kdialog", "--title", TITLE, "--yes-label", JUST_ONCE, "--no-label",
                        REMEMBER, "--yesnocancel",
                        "Use this choice for every file from now on?"])
        if code not in (0, 1):
            return None
        remember = code == 1
    else:
        return None
    for tag, _label, profile, view_only in CHOICES:
        if tag == picked:
            return Choice(profile, view_only, remember)
    return None
