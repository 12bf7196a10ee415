"""The broker's view of Qubes: a small interface with two implementations.

- `whonix_open.dom0.qubesadmin_backend` (the only module that imports
  `qubesadmin`): the real dom0, through `qubesadmin.Qubes()`.
- `whonix_open.sim.backend`: the simulated Qubes of the tests and the demo.

The backend is chosen explicitly by `connect()`: the simulation only when
WHONIX_OPEN_BACKEND=sim is set (the dom0 package does not even ship it), never
as a fallback when qubesadmin is missing.

Each method documents the Admin API calls it stands for, so that the call
budget of one open (see benchmarks/) means the same thing in both backends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, NamedTuple, Protocol

BACKEND_ENV = "WHONIX_OPEN_BACKEND"


class BackendError(Exception):
    """qubesd refused or failed a call (the message is safe to log)."""


class QubesdUnreachable(BackendError):
    """qubesd cannot be reached at all."""


class NoSuchQube(BackendError):
    """The named qube does not exist."""


class NotRunning(BackendError):
    """The qube is not running (e.g. kill of a halted qube)."""


class QubeInfo(NamedTuple):
    """The properties the broker needs of one qube, read in one go."""

    name: str
    klass: str
    template: str | None = None
    netvm: str | None = None
    default_dispvm: str | None = None
    template_for_dispvms: bool = False
    auto_cleanup: bool = False
    qrexec_timeout: int = 60


class Relay(Protocol):
    """A running qrexec service call into a disposable (a subprocess.Popen)."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Backend(Protocol):
    def qube_classes(self) -> dict[str, str]:
        """All qubes, name -> class. admin.vm.List."""

    def info(self, name: str) -> QubeInfo:
        """A fresh read of one qube's properties. admin.vm.property.GetAll.
        Raises NoSuchQube."""

    def feature_with_template(self, name: str, key: str) -> str | None:
        """features.check_with_template(key, None): the value on the qube or
        along its template chain, None if unset.
        admin.vm.feature.CheckWithTemplate."""

    def feature(self, name: str, key: str) -> str | None:
        """The qube's own feature, None if unset. admin.vm.feature.Get."""

    def set_feature(self, name: str, key: str, value: str) -> None:
        """admin.vm.feature.Set."""

    def tags(self, name: str) -> frozenset[str]:
        """The qube's tags. admin.vm.tag.List."""

    def add_tag(self, name: str, tag: str) -> None:
        """admin.vm.tag.Set."""

    def create_disposable(self, dvm: str) -> str:
        """admin.vm.CreateDisposable on the DVM template; returns the new
        disposable's name. It may be a preloaded one that is already running."""

    def set_netvm(self, name: str, netvm: str | None) -> None:
        """Set the netvm (None = no network). admin.vm.property.Set."""

    def start(self, name: str) -> None:
        """admin.vm.Start."""

    def power_state(self, name: str) -> str:
        """'Halted', 'Running', ... admin.vm.List on that qube."""

    def run_service(self, name: str, service: str, *, stdin: int | IO[bytes],
                    stdout: int | IO[bytes], connect_timeout: int) -> Relay:
        """Call *service* in the running qube with these file descriptors as
        its stdin/stdout (the broker never reads them). Does not start the
        qube. (one admin.vm.List to check it runs, then dom0's qrexec-client)"""

    def kill(self, name: str) -> None:
        """admin.vm.Kill. Raises NotRunning if it is not running."""

    def remove(self, name: str) -> None:
        """admin.vm.Remove (only for a halted disposable that auto_cleanup did
        not remove, e.g. after a failed start)."""

    def watch_netvm(self, name: str,
                    on_change: Callable[[str | None], None]) -> Callable[[], None]:
        """Call *on_change* (from any thread) whenever the qube's netvm is set
        or reset, and also if watching itself breaks (the broker then cannot
        vouch for the network path). Its argument is the netvm the event
        names ('' for none), or None when that is not known (a reset, a
        deletion, a broken watch). Returns a function that stops watching."""

    @property
    def calls(self) -> int:
        """How many Admin API calls this backend made so far."""


def connect(env: dict[str, str] | None = None) -> Backend:
    """The backend named by WHONIX_OPEN_BACKEND: unset or 'qubesadmin' for the
    real dom0, 'sim' for the simulated Qubes. Anything else is an error."""
    env = os.environ if env is None else env
    choice = env.get(BACKEND_ENV, "qubesadmin")
    if choice == "qubesadmin":
        from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

        return QubesadminBackend()
    if choice == "sim":
        from whonix_open.sim.backend import SimBackend  # not shipped in dom0

        return SimBackend.from_env(env)
    raise BackendError(f"unknown {BACKEND_ENV}={choice!r}")
