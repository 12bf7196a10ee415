"""Create, enforce, verify and destroy the disposable (DESIGN.md,
"Enforcement" 3-5 and 7).

The disposable comes only from admin.vm.CreateDisposable on the chosen DVM
template. Its netvm is set while it is still halted; a preloaded (already
running) one is kept only if it already has exactly the required netvm, and
never for offline. After start, class, template, auto_cleanup and netvm are
read back fresh; any mismatch kills it.
"""

from __future__ import annotations

import syslog
from collections.abc import Callable

from whonix_open.contract import Exit
from whonix_open.dom0 import signals
from whonix_open.dom0.audit import log_line
from whonix_open.dom0.backend import (
    Backend,
    BackendError,
    NoSuchQube,
    NotRunning,
    QubeInfo,
    QubesdUnreachable,
)
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.resolve import Plan

MARKER_FEATURE = "whonix-open-session"
# Visible to qrexec policy: 70-whonix-open.policy denies a disposable with
# this tag every service that would open data in another qube (DESIGN.md).
CONTAINED_TAG = "whonix-open-disposable"
# CreateDisposable may keep handing out preloaded disposables; don't loop forever.
MAX_CREATE_ATTEMPTS = 3


def _create_one(backend: Backend, plan: Plan, session_id: str,
                on_created: Callable[[str], None]) -> str | None:
    """A disposable with the plan's netvm, started; None if a preloaded one
    had to be thrown away."""
    # A signal while qubesd creates it would leave a disposable whose name
    # nobody recorded: hold signals until the session record names it.
    with signals.deferred():
        try:
            name = backend.create_disposable(plan.dvm)
        except QubesdUnreachable:
            raise
        except BackendError as e:
            raise Refusal(Exit.DISPOSABLE_FAILED,
                          f"CreateDisposable on {plan.dvm} failed: {e}") from None
        on_created(name)  # from here on, every exit path destroys it
    try:
        running = backend.power_state(name) != "Halted"
        backend.add_tag(name, CONTAINED_TAG)
        backend.set_feature(name, MARKER_FEATURE, session_id)
        if running:
            # A preloaded disposable booted with the DVM template's netvm.
            if plan.gateway is None or backend.info(name).netvm != plan.gateway:
                log_line(f"preloaded disposable {name} has the wrong network; replacing it")
                return None  # the next on_created() destroys it
        else:
            backend.set_netvm(name, plan.gateway)
            backend.start(name)
    except QubesdUnreachable:
        raise
    except BackendError as e:
        raise Refusal(Exit.DISPOSABLE_FAILED, f"disposable {name} could not be started: {e}") \
            from None
    return name


def provision(backend: Backend, plan: Plan, session_id: str,
              on_created: Callable[[str], None]) -> str:
    """A started disposable for *plan* (the caller watches, then verifies it).
    *on_created* is told every name that CreateDisposable returned, before
    anything else happens to it; it must destroy the previous one."""
    for _ in range(MAX_CREATE_ATTEMPTS):
        name = _create_one(backend, plan, session_id, on_created)
        if name is not None:
            return name
    raise Refusal(Exit.DISPOSABLE_FAILED,
                  f"CreateDisposable on {plan.dvm} kept returning preloaded disposables "
                  f"with the wrong network")


def verify(backend: Backend, name: str, plan: Plan) -> QubeInfo:
    """Read everything back, fresh, and refuse on any difference."""
    info = backend.info(name)
    if info.klass != "DispVM":
        raise Refusal(Exit.VERIFICATION_FAILED, f"{name} is a {info.klass}, not a DispVM")
    if info.template != plan.dvm:
        raise Refusal(Exit.VERIFICATION_FAILED,
                      f"{name} is based on {info.template}, not {plan.dvm}")
    if not info.auto_cleanup:
        destroy(backend, name, remove=True)  # a kill alone would leave it behind
        raise Refusal(Exit.VERIFICATION_FAILED, f"{name} does not have auto_cleanup")
    if info.netvm != plan.gateway:
        raise Refusal(Exit.NETWORK_REFUSED,
                      f"{name} has netvm {info.netvm or 'none'} instead of {plan.network}")
    return info


def destroy(backend: Backend, name: str, *, remove: bool = False) -> bool:
    """Kill the disposable (auto_cleanup then removes it). If it was not
    running - a failed start does not always remove it - or *remove* is set,
    remove it too. Never raises: it runs on every exit path. False if it may
    still be there."""
    try:
        backend.kill(name)
        if not remove:
            return True
    except NoSuchQube:
        return True
    except NotRunning:
        pass
    except Exception as e:  # noqa: BLE001 - cleanup must go on
        log_line(f"could not kill disposable {name}: {e}", syslog.LOG_ERR)
    try:
        if backend.power_state(name) == "Halted":
            backend.remove(name)
        else:
            backend.kill(name)
        return True
    except NoSuchQube:
        return True
    except Exception as e:  # noqa: BLE001
        log_line(f"could not remove disposable {name}: {e}", syslog.LOG_ERR)
        return False
