"""One run of whonix-open after the arguments are parsed: config, loop guard,
file checks, routing check, then all files opened at once, each reported."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time

from whonix_open.contract import DEFAULT_PROFILE, SERVICE_OPEN, SERVICE_VIEW
from whonix_open.vm import config, loopguard, routing
from whonix_open.vm.exitcodes import CliExit
from whonix_open.vm.opener import Outcome, Session, open_file
from whonix_open.vm.report import Reporter
from whonix_open.vm.targets import Target, TargetError, prepare

PROGRESS_MIN_SIZE = 8 << 20  # bytes; smaller files finish before a bar helps
PROGRESS_PERIOD = 0.5  # seconds between progress redraws
KILL_GRACE = 5.0  # seconds after a signal before children get SIGKILL
_JOIN_SLICE = 0.2  # seconds; lets the main thread notice the kill deadline
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run(ns: argparse.Namespace) -> int:
    reporter = Reporter(quiet=ns.quiet, use_notifications=not ns.no_notify)
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        reporter.error(f"config: {exc}")
        return CliExit.USAGE
    if ns.status:
        return _status(ns)

    profile = _profile(ns, cfg.default_profile)
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

    status = routing.routing_status()
    for text in status.warnings():
        reporter.warning(text)
    if cfg.require_whonix_gateway and not status.behind_gateway_for_sure():
        for _, target in targets:
            target.close()
        reporter.error(
            "refused: require_whonix_gateway is set in "
            f"{cfg.source} and this qube is not known to be behind a Whonix-Gateway"
        )
        return CliExit.REFUSED_LOCALLY

    service_name = (SERVICE_VIEW if view_only else SERVICE_OPEN) + "+" + profile
    session = Session()
    outcomes = _open_all(targets, service_name, profile or None, view_only, session, reporter)
    for index, outcome in outcomes.items():
        codes[index] = outcome.code
    if session.cancelled.is_set():
        return session.interrupted_code
    return _first_failure(codes)


def _profile(ns: argparse.Namespace, default: str | None) -> str:
    """The service argument always names the profile: dom0 refuses an empty
    one (a policy rule about "+tor" could not match it)."""
    if ns.offline:
        return "offline"
    if ns.profile is not None:
        return ns.profile
    return default or DEFAULT_PROFILE


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
) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}

    def worker(index: int, target: Target) -> None:
        try:
            outcome = open_file(target, service, profile, view_only, session)
        except Exception as exc:  # noqa: BLE001 - a bug must be reported, not lost in a thread
            outcome = Outcome(target.arg, CliExit.FILE_FAILED, f"{target.arg}: {exc!r}")
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

