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

Esc, Cancel or a missing dialog program send nothing (exit 1).
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


def _exec_whonix_open(args: list[str]) -> int:
    os.execvp("whonix-open", ["whonix-open", *args])  # noqa: S606 - fixed program, argv list
    return 127  # not reached


def link_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whonix-open-link")
    parser.add_argument("--confirm", action="store_true", help="ask before opening")
    parser.add_argument("links", nargs="+", metavar="URL")
    ns = parser.parse_args(argv)
    try:
        links = [check_link(link) for link in ns.links]
    except LinkError as exc:
        _notify_error(f"refused link {exc}")
        return 2
    if ns.confirm:
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


def choose_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whonix-open-choose")
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
    remembered = None if ns.ask else _remembered()
    if remembered is not None:
        profile, view_only = remembered
    else:
        names = ", ".join(shorten(os.path.basename(f) or f, 40) for f in ns.files[:3])
        if len(ns.files) > 3:
            names += f" and {len(ns.files) - 3} more"
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
