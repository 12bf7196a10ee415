"""Links and apps: one `qrexec-client-vm dom0 SERVICE` per link or app, all
started at once, each fed one line and then held open while the browser or
app runs (closing it - Ctrl-C, SIGTERM - makes dom0 kill the disposable).

Small on purpose: `whonix-open URL` must start about as fast as `--help`, so
this imports only what it needs, and the file machinery (vm/run.py) not at all.
"""

from __future__ import annotations

import argparse  # cheap: the CLI has imported it already
import contextlib
import os
import signal
import subprocess
import sys

from whonix_open.contract import Exit

QREXEC_CLIENT = "qrexec-client-vm"
QREXEC_CLIENT_FALLBACK = "/usr/lib/qubes/qrexec-client-vm"
TRANSPORT = 4  # vm.exitcodes.CliExit.TRANSPORT (not imported: start-up time)
_DOM0_CODES = frozenset(int(c) for c in Exit if c != Exit.OK)


def _client() -> str | None:
    """qrexec-client-vm on PATH (stand-ins first), else the agent's place; as
    vm/transport.py finds it, without importing shutil (start-up time)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", QREXEC_CLIENT)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return QREXEC_CLIENT_FALLBACK if os.access(QREXEC_CLIENT_FALLBACK, os.X_OK) else None


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


class ClientError(Exception):
    """qrexec-client-vm is missing or cannot be started: nothing was sent."""


def call_each(service: str, lines: list[bytes]) -> tuple[list[int], int | None]:
    """Send each line to its own call of *service*; (qrexec-client-vm's exit
    codes in order, negative for a signal; the signal number if we were
    interrupted). ClientError if qrexec-client-vm cannot be run at all."""
    program = _client()
    if program is None:
        raise ClientError(f"{QREXEC_CLIENT} not found on PATH or at "
                          f"{QREXEC_CLIENT_FALLBACK}: this does not look like a Qubes qube")
    previous = {s: signal.signal(s, _raise_stop)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    procs: list[subprocess.Popen[bytes]] = []
    stopped = None
    try:
        for line in lines:
            # stdout: a pipe we hold (dom0 sends nothing back): when this
            # process goes, its end closes and dom0 sees the caller gone.
            # Unbuffered stdin: if qrexec-client-vm has already ended (dom0
            # refused at once), the write fails here, and nothing is left
            # in a buffer to fail again at close: its exit code tells why.
            proc = subprocess.Popen([program, "dom0", service], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, bufsize=0)
            procs.append(proc)
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(line)  # one small line: fits any pipe buffer
            # Links: EOF after the line. Apps: keep it open; closing it is
            # not needed (dom0 watches our end of its stdout instead).
            if line.endswith(b"\n") and len(line) > 1:
                proc.stdin.close()
        for proc in procs:
            proc.wait()
    except _Stop as e:
        stopped = e.args[0]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait()
    except OSError as e:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise ClientError(f"cannot start {program}: {e.strerror}") from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for proc in procs:
            for pipe in (proc.stdin, proc.stdout):
                if pipe and not pipe.closed:
                    pipe.close()
    return [p.returncode for p in procs], stopped


# The shared messages (vm/messages.py) speak of files; said of a link or app:
_WORDING = (("The file was NOT opened", "Nothing was opened"),
            ("while the file was open", "while it was open"),
            (" Edits made after that point are lost.", ""),
            (" Edits not sent back before that are lost.", ""),
            ("opening files from it again", "opening from it again"))


def _describe(code: int, profile: str) -> str:
    from whonix_open.vm.messages import describe

    text = describe(code, profile)
    for old, new in _WORDING:
        text = text.replace(old, new)
    return text


def _profile(ns: argparse.Namespace, default: str | None) -> str:
    """Always named: dom0 refuses an empty profile (as for files, vm/run.py)."""
    if ns.offline:
        return "offline"
    return ns.profile or default or "tor"


def _report(ns: argparse.Namespace, failures: list[str], successes: list[str]) -> None:
    if not failures and ns.quiet:
        return  # nothing to say
    from whonix_open.vm.report import Reporter  # only now: start-up time

    reporter = Reporter(quiet=ns.quiet, use_notifications=not ns.no_notify)
    for text in successes:
        reporter.info(text)
    for text in failures:
        reporter.error(text)


def run(ns: argparse.Namespace) -> int:
    """`whonix-open URL...` or `whonix-open --app NAME`, arguments parsed
    (ns.links: the checked links, vm/links.py)."""
    from whonix_open.contract import SERVICE_URL
    from whonix_open.vm import config, loopguard

    try:
        cfg = config.load()
    except config.ConfigError as exc:
        print(f"whonix-open: config: {exc}", file=sys.stderr)
        return 2
    profile = _profile(ns, cfg.default_profile)
    spawned_by = loopguard.spawning_service()
    if spawned_by and not loopguard.confirm(loopguard.QUESTION.format(service=spawned_by)):
        print(f"whonix-open: refused: started from inside a {spawned_by} session; not "
              "opening another disposable without confirmation", file=sys.stderr)
        return 3
    if cfg.require_whonix_gateway:
        from whonix_open.vm import routing

        why_not = routing.routing_status().why_not_required_path()
        if why_not:
            print(f"whonix-open: refused: require_whonix_gateway is set in {cfg.source}: "
                  f"{why_not}.", file=sys.stderr)
            return 3

    if ns.app is not None:
        from whonix_open.vm.apps import APP_LINE, service_for

        labels, service, lines = [f"app {ns.app}"], service_for(ns.app, profile), [APP_LINE]
    else:
        labels, service = list(ns.links), f"{SERVICE_URL}+{profile}"
        lines = [link.encode("ascii") + b"\n" for link in ns.links]
    try:
        codes, stopped = call_each(service, lines)
    except ClientError as exc:  # nothing was sent: one message, not one per link
        _report(ns, [f"{exc}. Nothing was opened."], [])
        return TRANSPORT
    if stopped is not None:
        print("whonix-open: interrupted; dom0 closes the disposable", file=sys.stderr)
        return 128 + stopped

    failures, successes = [], []
    for label, code in zip(labels, codes, strict=True):
        if code == 0:
            successes.append(f"{label}: opened in a disposable ({profile}) and closed")
        else:
            failures.append(f"{label}: {_describe(code, profile)}")
    _report(ns, failures, successes)
    # The CLI's rules: 0, dom0's and qrexec's codes as they are, 4 for the rest.
    return next((c if c in _DOM0_CODES else TRANSPORT for c in codes if c != 0), 0)
