"""whonix-open: open files in a fresh Whonix disposable whose network dom0 has
checked (Tor through a Whonix-Gateway, or offline).

    whonix-open [--view-only | --edit] [--profile NAME | --offline]
                [--status [--json]] [--quiet] [--no-notify] [--] FILE...
    whonix-open [--profile NAME] [--url] URL...  (links: vm/links.py)
    whonix-open --app NAME [--profile NAME | --offline]   (apps: vm/apps.py)
    whonix-open --recover [PATH...]
    whonix-open --convert [--open ...] [--resolution PPI] [--archive DIR |
                --keep-original] [--convert-profile NAME] FILE...   (vm/convert.py)

Each FILE goes to dom0 over `qrexec-client-vm dom0 whonix.OpenInDisposable+PROFILE`
(whonix.ViewInDisposable+PROFILE with --view-only), each in its own disposable,
all at once. Edits made in the disposable replace the original only after a
complete, successful reply; otherwise the original stays byte-identical and any
edited copy is kept as NAME.whonix-open-edited-<timestamp> beside it (or in
$XDG_DATA_HOME/whonix-open/recovered/ when no file can be made there).
A file whose name begins with "view-only-" is sent as "_view-only-..." in edit
mode, or the disposable would open it view-only.

Exit status (with several files: the first failing file's, in argument order):
  0 ok; 1 a file failed here (refused, I/O error, edit not applied) or an
  unexpected internal error (reported on stderr, as a notification, and logged);
  2 usage or config error; 3 refused here (loop guard, require_whonix_gateway);
  4 qrexec-client-vm missing or ended abnormally; 5 the reply was larger than
  its cap (removed; the original is unchanged); 6 a conversion failed; 64-79 dom0's code and
  125-127 qrexec's code, passed through (listed in --help); 129/130/143 interrupted.

Only argparse and the contract are imported at start, so `--help` stays fast;
everything else is imported when a file is actually opened.
"""

from __future__ import annotations

import argparse
import sys

from whonix_open import __version__
from whonix_open.contract import is_profile_name
from whonix_open.vm.exitcodes import EPILOG

_EPILOG_NOTES = """
config: $XDG_CONFIG_HOME/whonix-open/config.toml (or /etc/xdg/whonix-open/),
  keys: default_profile = "NAME", view_only = true|false,
  require_whonix_gateway = true|false (refuse instead of warn unless dom0
  confirms this qube is behind a Whonix-Gateway), max_reply_size = "SIZE".
edit-back: the original is replaced (atomically, mode kept) only after dom0
  reports success; otherwise it is left byte-identical and any edited copy is
  kept as NAME.whonix-open-edited-<timestamp> next to it, or in
  $XDG_DATA_HOME/whonix-open/recovered/ if no file can be made there.
  Two runs editing one file at once: the first reply is applied, the later
  one kept. A killed run leaves a hidden .NAME.whonix-open-*.part (cut off:
  removed) or .complete (kept as an edited copy) file: the next run on that
  file, or --recover, reports and handles it.
  A name starting with "view-only-" is sent as "_view-only-..." in edit mode.
  Reply cap: an edit that comes back larger than --max-reply/max_reply_size
  (default 4 times the file, at least 64 MiB) or than the free space less a
  reserve is cut off and removed, the original untouched (exit status 5).
  The replaced file never gets more permissions than the original: no
  setuid/setgid/sticky bits, same group, same ACL, or it is kept instead with
  mode 0600 (kept copies are always 0600). The original's folder is held open
  from the start: a folder swapped meanwhile cannot redirect the edit.
"""


def _size(text: str) -> int:
    from whonix_open.vm.replycap import SizeError, parse_size

    try:
        return parse_size(text)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whonix-open",
        description=(
            "Open files in a fresh Whonix-Workstation disposable whose network "
            "path dom0 has checked: Tor through a Whonix-Gateway, or offline."
        ),
        epilog=EPILOG + "\n" + _EPILOG_NOTES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--view-only",
        action="store_true",
        help="open read-only; dom0 discards anything the disposable sends back",
    )
    mode.add_argument(
        "--edit",
        action="store_true",
        help="edits come back (the default; overrides view_only = true in the config)",
    )
    net = parser.add_mutually_exclusive_group()
    net.add_argument(
        "--profile",
        metavar="NAME",
        help=(
            "dom0 profile to use (built in: tor, offline; default: default_profile "
            "from the config, else the default dom0 reports, else tor)"
        ),
    )
    net.add_argument(
        "--offline", action="store_true", help="same as --profile offline: no network at all"
    )
    parser.add_argument(
        "--max-reply",
        metavar="SIZE",
        type=_size,
        help=(
            "the most an edited file may come back as (e.g. 8G for large media; "
            "default: max_reply_size from the config, else 4 times the file's size, at "
            "least 64 MiB); never more than the free space, less a reserve"
        ),
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="print this qube's routing status (asked of dom0) and exit",
    )
    parser.add_argument("--json", action="store_true", help="with --status: print JSON")
    parser.add_argument(
        "--recover",
        action="store_true",
        help=(
            "find what killed runs left behind (hidden .NAME.whonix-open-*.part/.complete "
            "files) in the FILEs' places (a directory: all of it; none: the current "
            "directory) and in the recovery directory: keep complete edits as "
            "NAME.whonix-open-edited-<time>, remove incomplete ones"
        ),
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="report only warnings and errors"
    )
    parser.add_argument(
        "--no-notify",
        action="store_true",
        help="no desktop notifications (they are used when stderr is not a terminal)",
    )
    parser.add_argument(
        "--url",
        action="store_true",
        help="every argument is a link, never a file name (what the link handler uses: "
        "no file of that name is looked for)",
    )
    parser.add_argument(
        "--app",
        metavar="NAME",
        help="start an app that dom0 allows (built in: torbrowser, terminal) in a "
        "disposable; it is destroyed when the app exits",
    )
    conv = parser.add_argument_group(
        "convert to a trusted PDF (in an offline disposable, like qvm-convert-pdf)")
    conv.add_argument(
        "--convert", action="store_true",
        help="convert each FILE (PDF; DOCX/ODT/ODS/XLSX where the disposable has "
        "LibreOffice) to NAME.trusted.pdf beside it, rendered to pixels in an offline "
        "disposable; the original is then moved to ~/QubesUntrustedPDFs")
    conv.add_argument(
        "--open", action="store_true",
        help="with --convert: then open the trusted PDFs (--profile/--offline, "
        "--view-only/--edit apply to this open)")
    conv.add_argument(
        "--resolution", metavar="PPI", type=int, default=None,
        help="resolution of the pages, 75 to 4800 (default 300)")
    keep = conv.add_mutually_exclusive_group()
    keep.add_argument(
        "--archive", metavar="DIR",
        help="move the original here instead (default ~/QubesUntrustedPDFs)")
    keep.add_argument(
        "--keep-original", action="store_true", help="leave the original where it is")
    conv.add_argument(
        "--convert-profile", metavar="NAME", default=None,
        help="the dom0 profile to convert in; it must have no network (default offline)")
    conv.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=None,
        help="give up when the disposable sends nothing for this long (default 300)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE|URL",
        help="the files to open; or http(s)/ftp links, each in a Tor disposable",
    )
    return parser


def _links_or_app(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> bool:
    """Check links/--app and set ns.links; True if this run is about them."""
    from whonix_open.vm.links import LinkError, check_link, looks_like_link

    ns.links = []
    if ns.recover:  # its PATHs are files of earlier opens, never links
        if ns.app is not None or ns.url:
            parser.error("--app and --url do not go with --recover")
        return False
    if ns.url:
        if ns.app is not None or not ns.files:
            parser.error("--url takes one or more URLs and no --app")
        links = list(ns.files)
    else:
        links = [arg for arg in ns.files if looks_like_link(arg)]
    if ns.app is None and not links:
        return False
    if ns.app is not None and ns.files:
        parser.error("--app takes no FILE or URL")
    if ns.app is not None:
        from whonix_open.vm.apps import AppError, service_for

        try:
            service_for(ns.app, "tor")
        except AppError as exc:
            parser.error(str(exc))
    if links and len(links) != len(ns.files):
        parser.error("give links and files in separate calls")
    if ns.view_only or ns.edit or ns.status or ns.max_reply is not None:
        parser.error("--view-only, --edit, --max-reply and --status apply to files only")
    if links and ns.offline:
        parser.error("links need a network: --offline cannot open them")
    try:
        ns.links = [check_link(link) for link in links]
    except LinkError as exc:
        from whonix_open.vm.report import Reporter  # a refusal: no usage text, a notification

        Reporter(quiet=ns.quiet, use_notifications=not ns.no_notify).error(
            f"refused link {exc}")
        raise SystemExit(2) from None
    return True


def main(args: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.json and not ns.status:
        parser.error("--json only goes with --status")
    if ns.profile is not None and not is_profile_name(ns.profile):
        parser.error(
            f"--profile {ns.profile!r} is not a profile name "
            "(lowercase letters, digits and '-', at most 31, not starting with '-')"
        )
    if ns.recover and ns.status:
        parser.error("--recover and --status do not go together")
    if ns.convert:
        _check_convert(parser, ns)
        from whonix_open.vm.convert_run import run as run_convert

        try:
            return run_convert(ns)
        except Exception as err:  # noqa: BLE001 - as for opens: one clear line, never a trace
            return unexpected_error(err, notify_user=not ns.no_notify)
    for option in ("open", "resolution", "archive", "keep_original", "convert_profile",
                   "timeout"):
        if getattr(ns, option) not in (None, False):
            parser.error(f"--{option.replace('_', '-')} goes only with --convert")
    if _links_or_app(parser, ns):
        from whonix_open.vm.remote import run as run_remote

        return run_remote(ns)
    if not ns.status and not ns.recover and not ns.files:
        parser.error("no FILE given (or use --status or --recover)")
    if ns.status and ns.files:
        parser.error("--status takes no FILE")

    try:
        from whonix_open.vm.run import run  # the heavy part, imported only now

        return run(ns)
    except KeyboardInterrupt:  # Ctrl-C before any file was sent: nothing to undo
        print("whonix-open: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug or a broken install: say so, never silently
        return unexpected_error(err, notify_user=not ns.no_notify)


def _check_convert(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    from whonix_open.contract import RESOLUTION_MAX, RESOLUTION_MIN

    if ns.status or ns.recover or ns.app is not None:
        parser.error("--convert does not go with --status, --recover or --app")
    if not ns.files:
        parser.error("--convert needs at least one FILE")
    if not ns.open and (ns.profile is not None or ns.offline or ns.view_only or ns.edit):
        parser.error("--profile, --offline, --view-only and --edit choose how --open opens "
                     "the trusted PDF; the conversion's profile is --convert-profile")
    if ns.resolution is not None and not RESOLUTION_MIN <= ns.resolution <= RESOLUTION_MAX:
        parser.error(f"--resolution must be from {RESOLUTION_MIN} to {RESOLUTION_MAX}")
    if ns.convert_profile is not None and not is_profile_name(ns.convert_profile):
        parser.error(f"--convert-profile {ns.convert_profile!r} is not a profile name")
    if ns.timeout is not None and not 0 < ns.timeout <= 86400:
        parser.error("--timeout must be more than 0 and at most 86400 seconds")


# Debian package and PyPI name of each third-party module the helper imports.
_PROVIDED_BY = {"xdg": ("python3-xdg", "pyxdg")}


def unexpected_error(err: BaseException, notify_user: bool = True) -> int:
    """Report an exception nothing else handled: one clear line on stderr, a
    desktop notification (a file manager started us and nobody reads stderr),
    and the traceback in a log file. Exit status 1."""
    missing = getattr(err, "name", None) if isinstance(err, ModuleNotFoundError) else None
    if missing:
        top = missing.split(".")[0]
        deb, pypi = _PROVIDED_BY.get(top, (f"python3-{top}", top))
        text = (f"the Python module '{top}' is missing: whonix-open is not completely "
                f"installed (Debian package {deb}, or pip install {pypi}).")
    else:
        text = ("whonix-open stopped on an unexpected internal error (a bug or a broken "
                "install); files already handed over are not affected.")
    log = _log_traceback(err)
    detail = f" Details: {log}" if log else ""
    print(f"whonix-open: error: {text}{detail}", file=sys.stderr, flush=True)
    if log is None:  # no log file: the traceback goes after the clear line
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    if notify_user and not _isatty(sys.stderr):
        try:
            from whonix_open.vm import notify

            notify.notify("whonix-open: error", text + detail, "critical")
        except Exception:  # noqa: BLE001, S110 - stderr already carries the message
            pass
    return 1


def _log_traceback(err: BaseException) -> str | None:
    """Append the traceback to $XDG_STATE_HOME/whonix-open/error.log; its path,
    or None. Plain os.environ: pyxdg may be the very thing that is missing."""
    import os
    import time
    import traceback

    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    path = os.path.join(base, "whonix-open", "error.log")
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} whonix-open "
                      f"{__version__} pid {os.getpid()}\n")
            log.write("".join(traceback.format_exception(err)))
    except OSError:
        return None
    return path


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
