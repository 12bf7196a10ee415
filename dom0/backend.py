"""The broker's view of Qubes: a small interface with two implementations.

- `whonix_open.dom0.qubesadmin_backend` (the only module that imports
  `qubesadmin`): the real dom0, through `qubesadmin.Qubes()`.
- the simulated Qubes of the tests and the demo, which is not part of the
  broker (see `whonix_open.dom0.choose_backend`, which picks one: this module
  imports neither implementation, so neither import cycle nor simulation).

Each method documents the Admin API calls it makes (as counted at qubesd's
socket with the real library), so that the call budget of one open (see
README, "Admin API calls per open") means the same thing in both backends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import IO, NamedTuple, Protocol


class BackendError(Exception):
    """qubesd refused or failed a call (the message is safe to log)."""


class QubesdUnreachable(BackendError):
    """qubesd cannot be reached at all."""


class NoSuchQube(BackendError):
    """The named qube does not exist."""


class NotRunning(BackendError):
    """The qube is not running (e.g. kill of a halted qube)."""


class QubeInfo(NamedTuple):
    """The properties the broker needs of one qube, read in one go: one
    admin.vm.property.GetAll, whose stateless properties `klass` and `xid`
    give the class and whether it runs (qubes/vm/__init__.py, qubesvm.py)."""

    name: str
    klass: str
    template: str | None = None
    netvm: str | None = None
    default_dispvm: str | None = None
    template_for_dispvms: bool = False
    auto_cleanup: bool = False
    qrexec_timeout: int = 60
    management_dispvm: str | None = None
    label: str | None = None
    uuid: str | None = None
    xid: int = -1  # qubesd's domain id: -1 = not running (Halted)
    memory: int = 400  # MB a qube gets at start (QubesVM.DEFAULT_MEMORY)


class Relay(Protocol):
    """A running qrexec service call into a disposable (a subprocess.Popen)."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Backend(Protocol):
    def qube_classes(self) -> dict[str, str]:
        """All qubes, name -> class. One admin.vm.List on dom0."""

    def info(self, name: str) -> QubeInfo:
        """A fresh read of one qube's properties, class included: one
        admin.vm.property.GetAll. Raises NoSuchQube."""

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
        disposable's name. On R4.3 it may be a preloaded one that is already
        running (booted with the DVM template's netvm)."""

    def create_dispvm(self, dvm: str, name: str, label: str) -> None:
        """admin.vm.Create.DispVM on the DVM template: a halted DispVM that
        never comes from the preload queue, auto_cleanup off (set it before
        start). Raises BackendError if *name* is taken."""

    def set_property(self, name: str, key: str, value: str | None) -> None:
        """admin.vm.property.Set; None = empty (no netvm, no default_dispvm)."""

    def start(self, name: str) -> None:
        """admin.vm.Start."""

    def power_state(self, name: str) -> str:
        """'Halted', 'Running', ... admin.vm.CurrentState. Raises NoSuchQube
        or BackendError, never answers 'NA'."""

    def run_service(self, name: str, service: str, *, stdin: int | IO[bytes],
                    stdout: int | IO[bytes], connect_timeout: int) -> Relay:
        """Call *service* in the running qube with these file descriptors as
        its stdin/stdout (the broker never reads them). Never starts the
        qube. No Admin API call: dom0's qrexec-client reaches only a running
        qube's qrexec-daemon."""

    def kill(self, name: str) -> None:
        """admin.vm.Kill. Raises NotRunning if it is not running."""

    def remove(self, name: str) -> None:
        """admin.vm.Remove (a halted disposable that auto_cleanup did not
        remove, e.g. after a failed start; a DVM template `setup` made)."""

    # --- used only by `whonix-open-admin setup` (never by the broker) -------

    def create_appvm(self, template: str, name: str, label: str) -> None:
        """admin.vm.Create.AppVM+TEMPLATE, payload `name=N label=L`: a halted
        AppVM with every other property at its default (qvm-create's call)."""

    def remove_feature(self, name: str, key: str) -> None:
        """admin.vm.feature.Remove (raises BackendError if it is not set)."""

    def property_names(self, name: str) -> frozenset[str]:
        """The properties the qube has on this qubesd. admin.vm.property.List."""

    def watch_netvm(self, name: str,
                    on_change: Callable[[str | None], None]) -> Callable[[], None]:
        """One admin.Events stream on the qube. Calls *on_change* (from any
        thread) with the new netvm name of every property-set:netvm ('' for
        none), and with None when the value is unknown: property-reset or
        property-del of netvm, or the watch itself broke. Returns a function
        that stops watching."""

    @property
    def calls(self) -> int:
        """How many Admin API calls this backend made so far."""


def parse_get_all(text: str) -> dict[str, str]:
    """admin.vm.property.GetAll's reply (qubes/api/admin.py
    `_property_get_all`: `NAME default=BOOL type=TYPE VALUE` per line, with
    backslash and newline escaped) -> name -> value text ('' = None)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        name, _default, _type, value = [*line.split(" ", 3), "", "", ""][:4]
        props[name] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)
    return props


def qube_info(name: str, props: Mapping[str, str]) -> QubeInfo:
    """QubeInfo from parse_get_all(); a property the qube lacks (`template` of
    a TemplateVM, ...) reads as its default here."""
    def opt(key: str) -> str | None:
        return props.get(key) or None
    return QubeInfo(
        name=name, klass=props.get("klass", ""), template=opt("template"),
        netvm=opt("netvm"), default_dispvm=opt("default_dispvm"),
        template_for_dispvms=props.get("template_for_dispvms") == "True",
        auto_cleanup=props.get("auto_cleanup") == "True",
        qrexec_timeout=int(props.get("qrexec_timeout") or 60),
        management_dispvm=opt("management_dispvm"), label=opt("label"), uuid=opt("uuid"),
        xid=int(props.get("xid") or -1), memory=int(props.get("memory") or 400))
