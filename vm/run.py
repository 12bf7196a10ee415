"""One run of whonix-open after the arguments are parsed: config, loop guard,
file checks, routing check, then all files opened at once, each reported."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import traceback

from whonix_open.contract import DEFAULT_PROFILE, SERVICE_OPEN, SERVICE_VIEW, is_profile_name
from whonix_open.vm import config, leftovers, loopguard, oserrors, routing
from whonix_open.vm.exitcodes import CliExit
from whonix_open.vm.opener import Outcome, Session, Unexpected, open_file
from whonix_open.vm.report import Reporter
from whonix_open.vm.targets import Target, TargetError, prepare

PROGRESS_MIN_SIZE = 8 << 20  # bytes; smaller files finish before a bar helps
PROGRESS_PERIOD = 0.5  # seconds between progress redraws
KILL_GRACE = 5.0  # seconds after a signal before children get SIGKILL
_JOIN_SLICE = 0.2  # seconds; lets the main thread notice the kill deadline
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEBUG_ENV = "WHONIX_OPEN_DEBUG"  # set: a worker's unexpected error prints its traceback


def run(ns: argparse.Namespace) -> int:
    reporter = Reporter(quiet=ns.quiet, use_notifications=not ns.no_notify)
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        reporter.error(f"config: {exc}")
        return CliExit.USAGE
    if ns.status:
        return _status(ns)
    if ns.recover:
        return _recover(ns.files, reporter)

    view_only = ns.view_only or (cfg.view_only and not ns.edit)

    service = loopguard.spawning_service()
    if service and not loopguard.confirm(loopguard.QUESTION.format(service=service)):
        reporter.error(
            f"refused: started from inside a {service} session (see qubes-issues "
            "#7406); not opening another disposable without confirmation"
        )
        return CliExit.REFUSED_LOCALLY

    codes: list[int] = []  # per argument, in order
    targets: list[tuple[int, Target]] = []
    seen: set[str] = set()
    for index, arg in enumerate(ns.files):
        try:
            target = prepare(arg)
        except TargetError as exc:
            reporter.error(str(exc))
            codes.append(CliExit.FILE_FAILED)
            continue
        if target.path in seen:
            target.close()
            reporter.error(f"{arg}: the same file was given twice; opening it once")
            codes.append(CliExit.FILE_FAILED)
            continue
        seen.add(target.path)
        targets.append((index, target))
        codes.append(CliExit.OK)
    if not targets:
        return _first_failure(codes)
    for _, target in targets:  # what an earlier, killed run left of this file
        _report_leftovers(leftovers.scan_for_file(target.path), reporter)

    status = routing.routing_status()
    for text in status.warnings(files=len(targets)):
        reporter.warning(text)
    why_not = status.why_not_required_path() if cfg.require_whonix_gateway else None
    if why_not:
        for _, target in targets:
            target.close()
        reporter.error(f"refused: require_whonix_gateway is set in {cfg.source}: {why_not}.")
        return CliExit.REFUSED_LOCALLY

    profile = _profile(ns, cfg.default_profile, status)
    service_name = (SERVICE_VIEW if view_only else SERVICE_OPEN) + "+" + profile
    session = Session()
    max_reply = ns.max_reply if ns.max_reply is not None else cfg.max_reply_size
    outcomes = _open_all(
        targets, service_name, profile, view_only, session, reporter, max_reply
    )
    for index, outcome in outcomes.items():
        codes[index] = outcome.code
    if session.cancelled.is_set():
        return session.interrupted_code
    return _first_failure(codes)


def _profile(ns: argparse.Namespace, default: str | None, status: routing.Routing) -> str:
    """The service argument, always a profile name: dom0 refuses an empty one
    (64), so that a policy rule about `+tor` cannot be bypassed with `+`.
    --profile/--offline, else the user's default_profile, else the default
    dom0 reported in the RoutingStatus answer we already have, else "tor"."""
    if ns.offline:
        return "offline"
    if ns.profile is not None:
        return ns.profile
    if default:
        return default
    if status.verified and is_profile_name(status.default_profile or ""):
        return str(status.default_profile)
    return DEFAULT_PROFILE


def _report_leftovers(found: list[leftovers.Found], reporter: Reporter) -> bool:
    """Tell the user about each leftover; False if one could not be handled."""
    for item in found:
        reporter.warning(item.message())
    return all(item.error is None for item in found)


def _recover(paths: list[str], reporter: Reporter) -> int:
    """--recover [PATH...]: the leftovers of killed runs in each directory
    (or of each file), and in the recovery directory."""
    found: list[leftovers.Found] = []
    ok = True
    for path in paths or ["."]:
        if os.path.isdir(path):
            found += leftovers.scan(path)
            continue
        # A file that is gone may still have leftovers beside where it was;
        # a name that is nowhere (or a directory that is not one) is an error.
        here: list[leftovers.Found] = []
        if not path.endswith(os.sep) and os.path.isdir(os.path.dirname(os.path.abspath(path))):
            here = leftovers.scan_for_file(os.path.realpath(path))
        if not here and not os.path.lexists(path):
            what = "directory" if path.endswith(os.sep) else "file or directory"
            reporter.error(f"{path}: no such {what}.")
            ok = False
        found += here
    recovery = leftovers.existing_recovery_dir()
    if recovery:
        found += leftovers.scan(recovery)
    ok = _report_leftovers(found, reporter) and ok
    if not found and ok:
        reporter.info("no leftovers of earlier runs found.")
    return CliExit.OK if ok else CliExit.FILE_FAILED


def _first_failure(codes: list[int]) -> int:
    return next((code for code in codes if code != CliExit.OK), CliExit.OK)


def _status(ns: argparse.Namespace) -> int:
    status = routing.routing_status()
    if ns.json:
        print(json.dumps(status.as_json(), sort_keys=True))
    else:
        print(routing.format_text(status))
    return CliExit.OK


def _open_all(
    targets: list[tuple[int, Target]],
    service: str,
    profile: str | None,
    view_only: bool,
    session: Session,
    reporter: Reporter,
    max_reply: int | None = None,
) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}

    def worker(index: int, target: Target) -> None:
        try:
            outcome = open_file(target, service, profile, view_only, session, max_reply)
        except Exception as exc:  # noqa: BLE001 - a bug must be reported, not lost in a thread
            cause = exc.__cause__ if isinstance(exc, Unexpected) else exc
            kept = exc.kept if isinstance(exc, Unexpected) else None
            note = f" What the disposable sent back is kept at {kept}, not applied." if kept else ""
            outcome = Outcome(
                target.arg,
                CliExit.FILE_FAILED,
                f"{target.arg}: whonix-open stopped handling this file because of "
                f"{oserrors.why(cause or exc, target.directory)}.{note}",
                kept,
            )
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()  # the details for a bug report
        outcomes[index] = outcome
        if outcome.ok:
            reporter.info(outcome.message)
        else:
            reporter.error(outcome.message)

    threads = [
        threading.Thread(target=worker, args=pair, name=f"open-{pair[0]}") for pair in targets
    ]
    previous = _install_signal_handlers(session)
    done = threading.Event()
    watcher = None
    if reporter.interactive and any(t.size >= PROGRESS_MIN_SIZE for _, t in targets):
        watcher = threading.Thread(
            target=_show_progress, args=(session, reporter, done), daemon=True
        )
    try:
        for thread in threads:
            thread.start()
        if watcher is not None:
            watcher.start()
        _wait(threads, session)
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
            reporter.end_progress()
        if session.cancelled.is_set() and previous:
            # Interrupted: later signals of a burst must not kill us (default
            # action) or raise KeyboardInterrupt while the outcome is being
            # reported, nor during interpreter shutdown, which resets Python
            # handlers, but not SIG_IGN, to the default. No child is started
            # any more, so none inherits SIG_IGN.
            for signum in previous:
                signal.signal(signum, signal.SIG_IGN)
        else:
            _restore_signal_handlers(previous)
    return outcomes


def _wait(threads: list[threading.Thread], session: Session) -> None:
    """Join the workers; after a signal, SIGKILL children that outlive the
    grace period so that we always end."""
    killed = False
    cancelled_at: float | None = None
    for thread in threads:
        while thread.is_alive():
            thread.join(_JOIN_SLICE)
            if not session.cancelled.is_set() or killed:
                continue
            if cancelled_at is None:
                cancelled_at = time.monotonic()
            elif time.monotonic() - cancelled_at > KILL_GRACE:
                for transfer in session.transfers():
                    transfer.kill()
                killed = True


def _install_signal_handlers(session: Session) -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals only reach the main thread (e.g. tests calling main)

    def handler(signum: int, _frame: object) -> None:
        session.cancel(signum)

    previous = {}
    for signum in _HANDLED_SIGNALS:
        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for signum, old in previous.items():
        signal.signal(signum, old)  # type: ignore[arg-type]


def _show_progress(session: Session, reporter: Reporter, done: threading.Event) -> None:
    while not done.wait(PROGRESS_PERIOD):
        parts = []
        for transfer in session.transfers():
            if transfer.size < PROGRESS_MIN_SIZE:
                continue
            if transfer.send_complete:
                parts.append(f"{transfer.label}: open in the disposable")
            else:
                percent = 100 * transfer.sent // max(transfer.size, 1)
                parts.append(f"{transfer.label}: {percent}% of {transfer.size >> 20} MiB sent")
        if parts:
            reporter.progress("whonix-open: " + "; ".join(parts))

