"""Two desktop entry points around `whonix-open`:

whonix-open-link [--confirm] [--] URL...
    The x-scheme-handler/http(s) handler ("Open link in Tor disposable"):
    each link is checked (vm/links.py); with --confirm a dialog shows its
    host first, then the whole link (nothing that is sent is left out). Then
    `whonix-open --url -- URL...` runs: links are passed as links, never
    looked up as file names (a planted file named like the link must not
    turn a click into a file open).

whonix-open-choose [--ask | --forget] [--] FILE...
    "Open in disposable...": a dialog asks Tor or offline, view-only or edit,
    and whether to remember that for this qube ($XDG_CONFIG_HOME/whonix-open/
    chooser.json); a remembered choice is used without asking (--ask asks
    anyway, --forget drops it). Then `whonix-open [--view-only|--edit]
    --profile P -- FILE...` runs.

Esc, Cancel or a missing dialog program send nothing (exit 1). So does
a failure before anything is sent: no display to ask on, no FILE that can
be opened, `whonix-open` itself not installed; each is said on stderr and,
as a desktop entry's stderr is read by nobody, as a notification.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from whonix_open.vm import dialogs
from whonix_open.vm.links import LinkError, check_link, host_of, shorten, shown_whole

CANCELLED = 1


def _notify_error(text: str) -> None:
    from whonix_open.vm.report import Reporter

    Reporter().error(text)


def _exec_whonix_open(args: list[str], program: str = "whonix-open") -> int:
    """Become *program* with *args*; if it cannot run, say why (exit 1)."""
    try:
        os.execvp(program, [program, *args])  # noqa: S606 - fixed program, argv list
    except OSError as exc:
        why = ("it is not installed (not found on PATH)" if isinstance(exc, FileNotFoundError)
               else exc.strerror)
        _notify_error(f"cannot run the {program} command: {why}. Nothing was opened.")
    return CANCELLED


_EXIT = ("exit status: that of whonix-open (see whonix-open --help), or 1 when "
         "nothing was sent (cancelled, no dialog could be shown, whonix-open missing)")


def _cannot_ask() -> bool:
    """Say why no dialog can be shown, if none can."""
    why = dialogs.why_cannot_ask()
    if why is not None:
        _notify_error(f"cannot ask: {why}. Nothing was opened.")
    return why is not None


def link_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="whonix-open-link",
        description="Open web links in a fresh Whonix disposable whose Tor gateway dom0 "
        "checks first (the http/https handler; runs whonix-open). Each link is checked "
        "here before anything is sent.",
        epilog=_EXIT)
    parser.add_argument("--confirm", action="store_true", help="ask before opening")
    parser.add_argument("links", nargs="+", metavar="URL")
    ns = parser.parse_args(argv)
    try:
        links = [check_link(link) for link in ns.links]
    except LinkError as exc:
        _notify_error(f"refused link {exc}")
        return 2
    if ns.confirm:
        if _cannot_ask():
            return CANCELLED
        for link in links:
            if not dialogs.confirm_link(host_of(link), shown_whole(link)):
                return CANCELLED
    return _exec_whonix_open(["--url", "--", *links])


def _state_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".config")
    return Path(base) / "whonix-open" / "chooser.json"


def _remembered() -> tuple[str, bool] | None:
    try:
        data = json.loads(_state_file().read_text())
        profile, view_only = data["profile"], data["view_only"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (profile, view_only) not in {(c[2], c[3]) for c in dialogs.CHOICES}:
        return None
    return profile, view_only


def _remember(profile: str, view_only: bool) -> None:
    path = _state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"profile": profile, "view_only": view_only}) + "\n")
    tmp.replace(path)


def _any_openable(files: list[str]) -> bool:
    """Whether one of *files* can be opened; if none can, say why (asking
    first would only lead to whonix-open's refusal). With some that can,
    whonix-open reports the others itself."""
    from whonix_open.vm.targets import TargetError, prepare

    why = []
    for name in files:
        try:
            prepare(name).close()
            return True
        except TargetError as exc:
            why.append(str(exc))
    for text in why:
        _notify_error(text)
    return False


def choose_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="whonix-open-choose",
        description="Open files in a fresh Whonix disposable, asking first: Tor or "
        "offline, view-only or edit, just this time or remembered for this qube "
        f"({_state_file()}). Then runs whonix-open.",
        epilog=_EXIT)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ask", action="store_true", help="ask even if a choice is remembered")
    group.add_argument("--forget", action="store_true", help="forget the remembered choice")
    parser.add_argument("files", nargs="*", metavar="FILE")
    ns = parser.parse_args(argv)
    if ns.forget:
        _state_file().unlink(missing_ok=True)
        if not ns.files:
            return 0
    if not ns.files:
        parser.error("no FILE given")
    if not _any_openable(ns.files):
        return CANCELLED
    remembered = None if ns.ask else _remembered()
    if remembered is not None:
        profile, view_only = remembered
    else:
        names = ", ".join(shorten(os.path.basename(f) or f, 40) for f in ns.files[:3])
        if len(ns.files) > 3:
            names += f" and {len(ns.files) - 3} more"
        if _cannot_ask():
            return CANCELLED
        choice = dialogs.choose(names, preset=_remembered() or ("tor", True))
        if choice is None:
            return CANCELLED
        profile, view_only = choice.profile, choice.view_only
        if choice.remember:
            _remember(profile, view_only)
    mode = "--view-only" if view_only else "--edit"
    return _exec_whonix_open([mode, "--profile", profile, "--", *ns.files])


if __name__ == "__main__":
    sys.exit(link_main())
