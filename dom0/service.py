"""whonix.OpenInDisposable / whonix.ViewInDisposable: the broker, step by step.

    validate the request (64)  ->  load the profiles (66, unknown profile 64)
    -> take a session slot (68)  ->  connect to qubesd (73)
    -> remove what dead sessions left  ->  check the caller (64, loop 72)
    -> choose DVM template and gateway (66)  ->  create, set netvm, start (69)
    -> watch the netvm, verify everything (70, 67)  ->  relay (71, 69)
    -> kill the disposable, always.

Every refusal before "create" costs no disposable; every path after it runs
`destroy`. A signal raises `Terminated` in the main thread, so it unwinds
through the same `finally`. If even that is cut short (SIGKILL), the session
file still names the disposable and the next request removes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import syslog
from collections.abc import Mapping, Sequence

from whonix_open.contract import SERVICE_OPEN, SERVICE_VIEW, Exit
from whonix_open.dom0 import disposable, sessions
from whonix_open.dom0.audit import AuditRecord, log_line
from whonix_open.dom0.backend import Backend, BackendError, NoSuchQube, connect
from whonix_open.dom0.config import ConfigError, load_config
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.relay import NetvmAlarm, relay
from whonix_open.dom0.request import parse_request
from whonix_open.dom0.resolve import make_plan

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Terminated(BaseException):
    """A signal asked us to stop (BaseException: no `except Exception` eats it)."""


def _on_signal(signum: int, _frame: object) -> None:
    # Only the first signal interrupts; later ones must not cut the cleanup.
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


def sweep_stale(backend: Backend, stale: Sequence[sessions.Stale]) -> None:
    """Destroy disposables of dead sessions - only those that still carry that
    session's marker (a recycled dispNNNN name must never be killed)."""
    for s in stale:
        left = []
        for name in s.disposables:
            try:
                mine = backend.feature(name, disposable.MARKER_FEATURE) == s.session
            except NoSuchQube:
                mine = False
            if mine:
                log_line(f"removing {name}, left behind by dead session {s.session}")
                if not disposable.destroy(backend, name):
                    left.append(name)
        if left:  # keep the record of what could not be removed; retry next time
            fd = os.open(s.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                sessions.write_record(fd, left)
            finally:
                os.close(fd)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(s.path)


def _is_our_disposable(backend: Backend, caller_klass: str, caller: str) -> bool:
    if caller_klass != "DispVM":
        return False
    return backend.feature(caller, disposable.MARKER_FEATURE) is not None


def serve(service: str, argv: Sequence[str], env: Mapping[str, str], audit: AuditRecord, *,
          backend: Backend | None, stdin: int, stdout: int) -> Exit:
    view_only = service == SERVICE_VIEW
    request = parse_request(service, argv, env)
    audit.caller = request.caller
    try:
        config = load_config(env)
    except ConfigError as e:
        raise Refusal(Exit.MISCONFIGURED, f"configuration: {e}") from None
    profile = config.profile(request.profile)
    if profile is None:
        raise Refusal(Exit.BAD_REQUEST, f"unknown profile {request.profile}")
    audit.profile = profile.name

    session, stale = sessions.open_session(sessions.run_dir(env), request.caller, config.limits)
    owned: list[str] = []  # every disposable this request created and has not removed
    alarm = NetvmAlarm()
    stop_watch = None
    try:
        backend = backend or connect(env)
        sweep_stale(backend, stale)
        try:
            caller = backend.info(request.caller)
        except NoSuchQube:
            raise Refusal(Exit.BAD_REQUEST, f"caller {request.caller} does not exist") from None
        if _is_our_disposable(backend, caller.klass, caller.name):
            raise Refusal(Exit.LOOP, f"{caller.name} is itself a disposable of this service")

        plan = make_plan(backend, caller, profile)
        audit.dvm, audit.network = plan.dvm, plan.network

        def created(new: str) -> None:
            # A replaced one (preloaded with the wrong network) goes at once.
            owned[:] = [n for n in owned if not disposable.destroy(backend, n)]
            owned.append(new)
            audit.disposable = new
            session.record(owned)

        name = disposable.provision(backend, plan, session.id, created)
        # Watch first, then read back: a change after the read cannot be missed.
        stop_watch = backend.watch_netvm(name, lambda _netvm: alarm.poke())
        info = disposable.verify(backend, name, plan)
        return relay(backend, name, alarm, view_only=view_only, caller_in=stdin,
                     caller_out=stdout, connect_timeout=info.qrexec_timeout)
    finally:
        if stop_watch is not None:
            stop_watch()
        alarm.close()
        owned[:] = [n for n in owned if not _destroy_despite_signals(backend, n)]
        if owned:  # keep the file, naming what is left: the next request retries
            session.record(owned)
            os.close(session.fd)
        else:
            session.release()


def _destroy_despite_signals(backend: Backend, name: str) -> bool:
    while True:
        try:
            return disposable.destroy(backend, name)
        except Terminated:
            continue


def main(service: str, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         backend: Backend | None = None, stdin: int = 0, stdout: int = 1) -> int:
    """Entry point of the two open services; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    for s in SIGNALS:
        signal.signal(s, _on_signal)
    audit = AuditRecord(service=service)
    try:
        code = serve(service, argv, env, audit, backend=backend, stdin=stdin, stdout=stdout)
    except Refusal as e:
        code = e.code
        log_line(f"refused ({int(e.code)}): {e.reason}")
    except Terminated as e:
        code = Exit.INTERNAL
        log_line(f"terminated by signal {e.args[0]}")
    except BackendError as e:
        code = Exit.INTERNAL
        log_line(f"qubesd: {type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - dom0 answers with a code, not a traceback
        import traceback

        code = Exit.INTERNAL
        log_line(f"internal error: {type(e).__name__}: {e}", syslog.LOG_ERR)
        traceback.print_exc()  # to the qrexec log only
    audit.emit(int(code))
    return int(code)


def open_main() -> int:
    return main(SERVICE_OPEN)


def view_main() -> int:
    return main(SERVICE_VIEW)
