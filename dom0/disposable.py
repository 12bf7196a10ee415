"""Create, enforce, verify and destroy the disposable (DESIGN.md,
"Enforcement" 3-5 and 7, "Preloaded disposables").

Two ways to a disposable, chosen by the plan:
- the DVM template's own netvm is the plan's network (`plan.fits_dvm`):
  admin.vm.CreateDisposable, which on R4.3 may hand out a preloaded one that
  is already running - booted with exactly that netvm, so it fits;
- otherwise admin.vm.Create.DispVM: a new, halted DispVM that never comes
  from (or drains) the preload queue; auto_cleanup and the netvm are set
  before its first start.
Either way its default_dispvm is set to none before it starts (or, for a
preloaded one, before the relay). verify() then reads everything back and,
only if all is right, starts a disposable that is still halted.
"""

from __future__ import annotations

import os
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
# Create.DispVM needs a name. Not dispNNNN: qubesd names its own disposables
# "disp" + a dispid it picks among unused dispids, not unused names, so ours
# could make someone's CreateDisposable fail. A random one may be taken: retry.
NAME_PREFIX = "whonix-open-disp"
MAX_CREATE_ATTEMPTS = 3
# Set by qubesd on a qube whose netvm changed while it was paused, naming the
# netvm it is still wired to (qubes-core-admin R4.3 qubes/vm/mix/net.py).
DEFERRED_NETVM = "deferred-netvm-original"


def _new_name() -> str:
    return f"{NAME_PREFIX}{int.from_bytes(os.urandom(4), 'little') % 9999 + 1}"


def _create(backend: Backend, plan: Plan, note: Callable[..., None]) -> str:
    """A new disposable of plan.dvm: from the preload queue only if it fits.
    *note* records each step before it is taken (ownership.py: what a
    SIGKILL in the middle leaves behind can then be found)."""
    if plan.fits_dvm:
        note(creating=plan.dvm)
        return backend.create_disposable(plan.dvm)
    for attempt in range(MAX_CREATE_ATTEMPTS):
        name = _new_name()
        note(pending=name)  # before the call: reap can prove it was ours
        try:
            backend.create_dispvm(plan.dvm, name, plan.label)
            return name
        except QubesdUnreachable:
            raise
        except BackendError:  # most likely the name is taken
            if attempt == MAX_CREATE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def provision(backend: Backend, plan: Plan, session_id: str,
              on_created: Callable[[str], None],
              note: Callable[..., None] = lambda **_: None) -> str:
    """A disposable for *plan*, with everything set that must be set before
    its first start; verify() starts it. *on_created* is told the name
    CreateDisposable / Create.DispVM produced before anything else happens to
    it (from then on every exit path destroys it); *note* records the steps
    before that (`creating=DVM`, `pending=NAME`) and, once the disposable is
    marked, that they are over."""
    # A signal while qubesd creates it would leave a disposable whose name
    # nobody recorded: hold signals until the session record names it.
    with signals.deferred():
        try:
            name = _create(backend, plan, note)
        except QubesdUnreachable:
            raise
        except BackendError as e:
            raise Refusal(Exit.DISPOSABLE_FAILED,
                          f"creating a disposable of {plan.dvm} failed: {e}") from None
        on_created(name)  # from here on, every exit path destroys it
    try:
        if not plan.fits_dvm:
            backend.set_property(name, "auto_cleanup", "True")
        backend.add_tag(name, CONTAINED_TAG)
        # The marker last: with it, everything reap's proof needs is there.
        backend.set_feature(name, MARKER_FEATURE, session_id)
        note(creating=None, pending=None)
        if not plan.fits_dvm:
            backend.set_property(name, "netvm", plan.gateway)
        # No nested disposable with another network (DESIGN.md, "Nested disposables").
        backend.set_property(name, "default_dispvm", None)
    except QubesdUnreachable:
        raise
    except BackendError as e:
        raise Refusal(Exit.DISPOSABLE_FAILED, f"disposable {name} could not be prepared: {e}") \
            from None
    return name


def verify(backend: Backend, name: str, plan: Plan) -> QubeInfo:
    """Read everything back, fresh, and refuse on any difference; then start
    the disposable if it is still halted (a preloaded one already runs)."""
    info = backend.info(name)
    if info.klass != "DispVM":
        raise Refusal(Exit.VERIFICATION_FAILED, f"{name} is a {info.klass}, not a DispVM")
    if info.template != plan.dvm:
        raise Refusal(Exit.VERIFICATION_FAILED,
                      f"{name} is based on {info.template}, not {plan.dvm}")
    if not info.auto_cleanup:
        destroy(backend, name, remove=True)  # a kill alone would leave it behind
        raise Refusal(Exit.VERIFICATION_FAILED, f"{name} does not have auto_cleanup")
    if info.default_dispvm is not None:
        raise Refusal(Exit.VERIFICATION_FAILED,
                      f"{name} has default_dispvm {info.default_dispvm} instead of none")
    if info.netvm != plan.gateway:
        raise Refusal(Exit.NETWORK_REFUSED,
                      f"{name} has netvm {info.netvm or 'none'} instead of {plan.network}")
    if info.xid != -1:
        # Running already: a preload. A netvm set while it was paused is only
        # deferred (R4.3 qubes/vm/mix/net.py); until qubesd applies it - it
        # does not while the new netvm is halted - the qube is still wired to
        # the old one named here, whatever `netvm` says.
        deferred = backend.feature(name, DEFERRED_NETVM)
        if deferred is not None:
            raise Refusal(Exit.NETWORK_REFUSED,
                          f"{name} has netvm {info.netvm or 'none'}, but its change from "
                          f"{deferred or 'none'} has not been applied ({DEFERRED_NETVM})")
    if info.xid == -1:  # not running: a fresh one (a preloaded one runs already)
        try:
            backend.start(name)
        except QubesdUnreachable:
            raise
        except BackendError as e:
            raise Refusal(Exit.DISPOSABLE_FAILED, f"disposable {name} could not be started: {e}") \
                from None
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
