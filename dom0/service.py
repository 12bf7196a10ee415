"""whonix.OpenInDisposable / ViewInDisposable / OpenURLInDisposable /
StartAppInDisposable / ConvertInDisposable: one broker, step by step.

    validate the request (64)  ->  load the profiles (66, unknown profile 64)
    -> choose what to relay to (link offline 76, app not allowed 77,
       conversion with a network 78)
    -> wait for the caller's first byte, never reading it (75)
    -> connect to qubesd (73)  ->  check the caller (64, loop 72, no netvm
       but a profile with a network 79: dom0/admission.py)
    -> take a session slot counted against the caller's owner (68)
    -> remove what dead sessions left  ->  choose DVM template and gateway (66)
    -> create (CreateDisposable if the DVM's netvm fits, else Create.DispVM),
       contain it, set what must be set before its first start (69)
    -> watch the netvm, read everything back (70, 67), start it if halted (69)
    -> relay until the viewer closes (71, 69, lifetime 74)
    -> kill the disposable, always.

Every refusal before "create" costs no disposable; every path after it runs
`destroy`. A signal raises `Terminated` in the main thread, so it unwinds
through the same `finally`. If even that is cut short (SIGKILL), the session
file still names the disposable and the next request removes it (dom0/
ownership.py; DESIGN.md "The SIGKILL window" for the one gap left).
"""

from __future__ import annotations

import os
import sys
import syslog
import time
from collections.abc import Mapping, Sequence

from whonix_open.contract import (
    SERVICE_APP,
    SERVICE_CONVERT,
    SERVICE_OPEN,
    SERVICE_URL,
    SERVICE_VIEW,
    Exit,
)
from whonix_open.dom0 import disposable, sessions, signals
from whonix_open.dom0.admission import accept, admit
from whonix_open.dom0.audit import AuditRecord, log_line
from whonix_open.dom0.backend import Backend, BackendError
from whonix_open.dom0.choose_backend import connect
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.ownership import owner_of, sweep_stale
from whonix_open.dom0.relay import NetvmAlarm, relay, wait_for_caller
from whonix_open.dom0.resolve import make_plan
from whonix_open.dom0.signals import Terminated


def serve(service: str, argv: Sequence[str], env: Mapping[str, str], audit: AuditRecord, *,
          backend: Backend | None, stdin: int, stdout: int) -> Exit:
    request, config, profile, target = accept(service, argv, env, audit)
    wait_for_caller(stdin, config.limits.caller_wait_seconds)

    backend = backend or connect(env)
    caller, tags = admit(backend, request, profile)
    owner = owner_of(backend, caller, tags)

    session, stale = sessions.open_session(
        sessions.run_dir(env), owner, config.limits,
        {"kind": sessions.KINDS[service], "caller": caller.name, "profile": profile.name})
    deadline = time.monotonic() + 60 * config.limits.max_session_minutes
    owned: list[str] = []  # every disposable this request created and has not removed
    alarm = NetvmAlarm()
    stop_watch = None
    try:
        sweep_stale(backend, stale)
        plan = make_plan(backend, caller, profile)
        audit.dvm, audit.network = plan.dvm, plan.network
        session.record(owned, dvm=plan.dvm, network=plan.network)

        def created(new: str) -> None:
            # A replaced one (preloaded with the wrong network) goes at once.
            owned[:] = [n for n in owned if not disposable.destroy(backend, n)]
            owned.append(new)
            audit.disposable = new
            session.record(owned)

        name = disposable.provision(backend, plan, session.id, created,
                                    lambda **step: session.record(owned, **step))

        def netvm_event(value: str | None) -> None:
            # Only the very gateway the profile requires, set again, is harmless.
            if plan.gateway is None or value != plan.gateway:
                alarm.poke()

        # Watch first, then read back: a change after the read cannot be missed.
        stop_watch = backend.watch_netvm(name, netvm_event)
        info = disposable.verify(backend, name, plan)
        return relay(backend, name, alarm, target, caller_in=stdin, caller_out=stdout,
                     connect_timeout=info.qrexec_timeout, deadline=deadline)
    finally:
        if stop_watch is not None:
            stop_watch()
        alarm.close()
        owned[:] = [n for n in owned if not _destroy_despite_signals(backend, n)]
        if owned:  # keep the file, naming what is left: the next request retries
            session.keep(owned)
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
    """Entry point of the open services; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    signals.install()
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


def url_main() -> int:
    return main(SERVICE_URL)


def app_main() -> int:
    return main(SERVICE_APP)


def convert_main() -> int:
    return main(SERVICE_CONVERT)
