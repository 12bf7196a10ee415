"""whonix.OpenInDisposable / ViewInDisposable / OpenURLInDisposable /
StartAppInDisposable / ConvertInDisposable: one broker, step by step.

    validate the request (64)  ->  load the profiles (66, unknown profile 64)
    -> choose what to relay to (link offline 76, app not allowed 77,
       conversion with a network 78)
    -> wait for the caller's first byte, never reading it (75)
    -> connect to qubesd (73)  ->  check the caller (64, loop 72)
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
file still names the disposable and the next request removes it.
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
from whonix_open.dom0.audit import AuditRecord, log_line
from whonix_open.dom0.backend import Backend, BackendError, NoSuchQube, QubeInfo, connect
from whonix_open.dom0.config import ConfigError, load_config
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.relay import NetvmAlarm, relay, wait_for_caller
from whonix_open.dom0.relay_target import relay_target
from whonix_open.dom0.request import is_qube_name, parse_request
from whonix_open.dom0.resolve import make_plan
from whonix_open.dom0.signals import Terminated

CREATED_BY = "created-by-"
MAX_CREATOR_CHAIN = 4  # disposables created by disposables created by ...


def is_left_by(backend: Backend, name: str, stale: sessions.Stale) -> bool:
    """Whether *name* is the disposable that dead session created. Its marker
    says so; a disposable without one (the session died between recording
    and marking it) must still be a DispVM of the recorded DVM template that
    dom0 created - never just any qube that now has that name."""
    try:
        marker = backend.feature(name, disposable.MARKER_FEATURE)
        if marker is not None:
            return marker == stale.session
        info = backend.info(name)
        return (info.klass == "DispVM" and stale.dvm is not None
                and info.template == stale.dvm and "created-by-dom0" in backend.tags(name))
    except NoSuchQube:
        return False


def sweep_stale(backend: Backend, stale: Sequence[sessions.Stale]) -> None:
    """Destroy disposables of dead sessions (each record is ours alone: its
    flock is held); keep the record of what could not be removed."""
    for s in stale:
        left = []
        try:
            for name in s.disposables:
                if is_left_by(backend, name, s):
                    log_line(f"removing {name}, left behind by dead session {s.session}")
                    if not disposable.destroy(backend, name):
                        left.append(name)
        except BackendError:
            left = s.disposables  # try again next time
        sessions.finish_stale(s, left)


def owner_of(backend: Backend, caller: QubeInfo, tags: frozenset[str]) -> str:
    """The qube a request counts against: the caller, or for a disposable
    (whose *tags* are given) the qube that created it (its `created-by-<qube>`
    tag, followed up the chain). Disposables that dom0 created for a qrexec
    `@dispvm` call carry only `created-by-dom0`: they all share one owner."""
    info = caller
    for _ in range(MAX_CREATOR_CHAIN):
        if info.klass != "DispVM":
            return info.name
        if info is not caller:
            tags = backend.tags(info.name)
        creators = [t[len(CREATED_BY):] for t in tags if t.startswith(CREATED_BY)]
        named = [c for c in creators if c != "dom0" and is_qube_name(c)]
        if len(named) != 1:
            return sessions.SHARED_DISPOSABLES
        try:
            info = backend.info(named[0])
        except NoSuchQube:
            return named[0]  # counts against the name it was created by
    return sessions.SHARED_DISPOSABLES




def serve(service: str, argv: Sequence[str], env: Mapping[str, str], audit: AuditRecord, *,
          backend: Backend | None, stdin: int, stdout: int) -> Exit:
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
    target = relay_target(service, request, config, profile)
    audit.relay = target.service
    wait_for_caller(stdin, config.limits.caller_wait_seconds)

    backend = backend or connect(env)
    try:
        caller = backend.info(request.caller)
    except NoSuchQube:
        raise Refusal(Exit.BAD_REQUEST, f"caller {request.caller} does not exist") from None
    tags = backend.tags(caller.name) if caller.klass == "DispVM" else frozenset()
    if disposable.CONTAINED_TAG in tags:
        raise Refusal(Exit.LOOP, f"{caller.name} is itself a disposable of this service")
    owner = owner_of(backend, caller, tags)

    session, stale = sessions.open_session(
        sessions.run_dir(env), owner, config.limits,
        {"caller": caller.name, "profile": profile.name})
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

        name = disposable.provision(backend, plan, session.id, created)

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
