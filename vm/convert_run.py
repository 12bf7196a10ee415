"""One run of `whonix-open --convert [--open] FILE...`, arguments parsed.

Files are converted one after another (each in its own offline disposable),
with a progress line on a terminal or, for a document of more than one page, a
progress notification updated in place, and the result reported as always. A signal
stops the conversion under way (its output removed, its original untouched)
and ends the run. With --open, the trusted PDFs are then opened as
`whonix-open` opens files (vm/run.py), in the profile chosen for that.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from whonix_open.contract import RESOLUTION_DEFAULT
from whonix_open.vm import config, loopguard, notify
from whonix_open.vm.convert import (
    DEFAULT_TIMEOUT,
    ConvertFailed,
    Stopped,
    convert,
    default_archive,
)
from whonix_open.vm.exitcodes import CliExit
from whonix_open.vm.report import Reporter, printable
from whonix_open.vm.targets import TargetError, prepare

CONVERT_PROFILE = "offline"
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROGRESS_PERIOD = 2.0  # seconds between updates of the progress notification


def run(ns: argparse.Namespace) -> int:
    reporter = Reporter(quiet=ns.quiet, use_notifications=not ns.no_notify)
    try:
        config.load()  # a broken config is reported as for every other run
    except config.ConfigError as exc:
        reporter.error(f"config: {exc}")
        return CliExit.USAGE
    spawned_by = loopguard.spawning_service()
    if spawned_by and not loopguard.confirm(loopguard.QUESTION.format(service=spawned_by)):
        reporter.error(f"refused: started from inside a {spawned_by} session; not "
                       "starting another disposable without confirmation")
        return CliExit.REFUSED_LOCALLY

    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        caught.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in _SIGNALS}
    try:
        codes, outputs = _convert_all(ns, reporter, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        return 128 + caught[0]
    first = next((c for c in codes if c != CliExit.OK), CliExit.OK)
    if ns.open and outputs:
        from whonix_open.vm.run import run as run_open

        opened = argparse.Namespace(**vars(ns))
        opened.files, opened.status, opened.recover = outputs, False, False
        code = run_open(opened)
        return first or code
    return first


def _convert_all(ns: argparse.Namespace, reporter: Reporter,
                 stop: threading.Event) -> tuple[list[int], list[str]]:
    resolution = ns.resolution or RESOLUTION_DEFAULT
    profile = ns.convert_profile or CONVERT_PROFILE
    archive = None if ns.keep_original else (ns.archive or default_archive())
    timeout = ns.timeout or DEFAULT_TIMEOUT
    codes: list[int] = []
    outputs: list[str] = []
    for arg in ns.files:
        if stop.is_set():
            break
        try:
            target = prepare(arg)
        except TargetError as exc:
            reporter.error(str(exc))
            codes.append(CliExit.FILE_FAILED)
            continue
        label = printable(os.path.basename(target.path))
        progress = _Progress(reporter, label, not ns.no_notify)
        try:
            done = convert(target, resolution=resolution, profile=profile, archive=archive,
                           timeout=timeout, stop=stop, progress=progress)
        except Stopped:
            reporter.error(f"{arg}: interrupted; nothing was converted and the original "
                           "is untouched")
            codes.append(CliExit.CONVERT_FAILED)
            break
        except ConvertFailed as exc:
            reporter.error(f"{arg}: not converted: {exc}. The original is untouched.")
            codes.append(exc.code)
            continue
        finally:
            target.close()
            reporter.end_progress()
        where = (f"; the original was moved to {done.archived}" if done.archived else "")
        pages = f"{done.pages} page{'s' if done.pages != 1 else ''}"
        reporter.info(f"{arg}: converted ({pages}) to {done.output}{where}",
                      summary="whonix-open: converted")
        if done.warning:
            reporter.warning(f"{arg}: {done.warning}")
        codes.append(CliExit.OK)
        outputs.append(done.output)
    return codes, outputs


class _Progress:
    """Pages done: a progress line on a terminal; for a document of more than
    one page, else (stderr is no terminal), a notification that is updated in
    place at most every PROGRESS_PERIOD seconds."""

    def __init__(self, reporter: Reporter, label: str, notifications: bool) -> None:
        self.reporter = reporter
        self.label = label
        self.notify = notifications and not reporter.interactive and not reporter.quiet
        self.shown: str | None = None  # the notification's id, to replace it
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        self.reporter.progress(f"whonix-open: {self.label}: page {done} of {total} converted")
        if not self.notify or total < 2 or done == total:
            return  # the result is reported as every result is
        now = time.monotonic()
        if done and now - self.last < PROGRESS_PERIOD:
            return
        self.last = now
        self.shown = notify.progress(
            "whonix-open: converting",
            f"{self.label}: page {done} of {total}, in an offline disposable", self.shown)
