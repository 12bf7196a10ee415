"""One read of every qube the checks need: properties, power state, tags,
own features and the Whonix markers along the template chain.

Two sources give the same `Qube` records: the real dom0 through a
qubesadmin app (`QubesadminSource`, the only place here that touches
qubesadmin), and the simulation (whonix_open.sim.admin_source, offered as
an entry point; dom0 gets neither). Each source also hands out the broker's
`Backend`, so resolving a profile or killing a disposable goes through
exactly the broker's code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from whonix_open.dom0.backend import BACKEND_ENV, Backend, BackendError
from whonix_open.dom0.resolve import GW_FEATURE, WS_FEATURE, feature_true

ENTRY_POINTS = "whonix_open.admin_sources"
# Own features carried in the inventory, each read only where it means something
# (one admin.vm.feature.Get each): key -> which qubes.
FEATURES = {
    "whonix-open-session": lambda klass, dvm: klass == "DispVM",  # the broker's marker
    "preload-dispvm-max": lambda klass, dvm: dvm or klass == "AdminVM",  # R4.3 preloads
    "whonix-default-dispvm": lambda klass, dvm: klass != "AdminVM",  # the DVM choice
    "internal": lambda klass, dvm: True,  # in qrexec's system info
}


class Qube(NamedTuple):
    name: str
    klass: str
    template: str | None = None
    netvm: str | None = None
    default_dispvm: str | None = None
    template_for_dispvms: bool = False
    auto_cleanup: bool = False
    power_state: str = "Halted"
    tags: frozenset[str] = frozenset()
    features: Mapping[str, str] = {}  # own features (those in FEATURES)
    ws: bool = False  # feature whonix-ws on the qube or along its template chain
    gw: bool = False  # feature whonix-gw likewise
    uuid: str | None = None

    @property
    def running(self) -> bool:
        return self.power_state not in ("Halted", "NA")

    @property
    def is_ws_dvm(self) -> bool:
        """A Whonix-Workstation disposable template, judged as the broker does."""
        return self.template_for_dispvms and self.ws

    @property
    def whonix_ws(self) -> bool:
        """Tagged anon-vm (Whonix's marker on its qubes) or a Whonix-Workstation."""
        return self.ws or "anon-vm" in self.tags


Inventory = Mapping[str, Qube]


class Source(Protocol):
    """Where the admin command reads the system from."""

    backend: Backend

    def inventory(self, only: str | None = None) -> dict[str, Qube]:
        """Every qube; with *only* (a class), qubes of other classes carry
        just their name and class (power_state "?"): status and reap need
        no more, and skip most of the calls."""

    def global_default_dispvm(self) -> str | None:
        """The system's default_dispvm (qubes-prefs)."""


def _name(value: Any) -> str | None:
    return None if value is None or str(value) == "" else str(value)


class QubesadminSource:
    """The real system through a qubesadmin app (injected, or qubesadmin.Qubes())."""

    def __init__(self, app: Any = None) -> None:
        from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

        self.backend = QubesadminBackend(app)
        self.app = self.backend.app

    def global_default_dispvm(self) -> str | None:
        import qubesadmin.exc

        try:
            return _name(self.app.default_dispvm)
        except qubesadmin.exc.QubesException as e:
            raise BackendError(f"{type(e).__name__}: {e}") from None

    def inventory(self, only: str | None = None) -> dict[str, Qube]:
        import qubesadmin.exc

        def prop(vm: Any, key: str, default: Any) -> Any:
            try:
                return getattr(vm, key)
            except qubesadmin.exc.QubesPropertyAccessError:
                raise
            except AttributeError:  # the class has no such property
                return default

        result = {}
        try:
            self.app.domains.clear_cache()
            for vm in self.app.domains:
                klass = vm.klass
                if only is not None and klass != only:
                    result[vm.name] = Qube(name=vm.name, klass=klass, power_state="?")
                    continue
                dvm = bool(prop(vm, "template_for_dispvms", False))
                own = {}
                for key, wanted in FEATURES.items():
                    value = vm.features.get(key, None) if wanted(klass, dvm) else None
                    if value is not None:
                        own[key] = str(value)
                result[vm.name] = Qube(
                    name=vm.name, klass=klass,
                    template=_name(prop(vm, "template", None)),
                    netvm=_name(prop(vm, "netvm", None)),
                    default_dispvm=_name(prop(vm, "default_dispvm", None)),
                    template_for_dispvms=dvm,
                    auto_cleanup=bool(prop(vm, "auto_cleanup", False)),
                    power_state=vm.get_power_state(),
                    tags=frozenset(vm.tags), features=own,
                    ws=feature_true(vm.features.check_with_template(WS_FEATURE, None)),
                    gw=feature_true(vm.features.check_with_template(GW_FEATURE, None)),
                    uuid=_name(prop(vm, "uuid", None)))
        except qubesadmin.exc.QubesException as e:
            raise BackendError(f"{type(e).__name__}: {e}") from None
        return result


def connect(env: Mapping[str, str] | None = None, app: Any = None) -> Source:
    """*app*: a qubesadmin app (as qvm-* tools take it) or a ready Source.
    Without one, WHONIX_OPEN_BACKEND chooses as for the broker: unset or
    'qubesadmin' for the real dom0, 'sim' for the simulation (never a fallback)."""
    if app is not None:
        # Ask the class: a qubesadmin app turns any unknown attribute into a
        # qubesd call (admin.property.Get).
        return app if callable(getattr(type(app), "inventory", None)) else QubesadminSource(app)
    env = os.environ if env is None else env
    choice = env.get(BACKEND_ENV, "qubesadmin")
    if choice == "qubesadmin":
        return QubesadminSource()
    # Anything else is offered as an entry point (the simulation's, which the
    # dom0 install ships neither with its package nor its entry point).
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINTS, name=choice)
    if not found:
        raise BackendError(f"unknown {BACKEND_ENV}={choice!r}")
    return next(iter(found)).load()(env)
