"""One read of every qube the checks need: properties, power state, tags,
own features and the Whonix markers along the template chain - through the
broker's own `Backend`, the same calls the broker makes, so that the admin
command sees the system exactly as the broker does: in dom0 the real
qubesadmin (QubesadminBackend), in the tests and the demo the simulation
(WHONIX_OPEN_BACKEND=sim, which dom0 never gets).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from whonix_open.dom0.backend import Backend, BackendError, NoSuchQube, QubeInfo
from whonix_open.dom0.choose_backend import connect as connect_backend
from whonix_open.dom0.resolve import GW_FEATURE, WS_FEATURE, feature_true

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


class Source:
    """The system as the admin command reads it: the broker's Backend, and
    (for qubesadmin) the app, for the one global property a check needs."""

    def __init__(self, backend: Backend, app: Any = None) -> None:
        self.backend = backend
        self.app = app

    def global_default_dispvm(self) -> str | None:
        """The system's default_dispvm (qubes-prefs; admin.property.Get). The
        simulation has no global properties: None."""
        if self.app is None:
            return None
        import qubesadmin.exc

        try:
            return _name(self.app.default_dispvm)
        except qubesadmin.exc.QubesException as e:
            raise BackendError(f"{type(e).__name__}: {e}") from None

    def inventory(self, only: str | None = None) -> dict[str, Qube]:
        """Every qube; with *only* (a class), qubes of other classes carry
        just their name and class (power_state "?"): status and reap need no
        more, and skip most of the calls. Per qube: GetAll, tag.List, two
        CheckWithTemplate, a feature.Get for each feature that matters for
        its class, and CurrentState for disposables and DVM templates (the
        others' running or not comes with GetAll's xid)."""
        result = {}
        for name, klass in sorted(self.backend.qube_classes().items()):
            if only is not None and klass != only:
                result[name] = Qube(name=name, klass=klass, power_state="?")
                continue
            try:
                result[name] = self._read(name, klass)
            except NoSuchQube:
                continue  # gone since the list (disposables come and go): not there
        return result

    def _read(self, name: str, klass: str) -> Qube:
        b = self.backend
        info = b.info(name) if klass != "AdminVM" else QubeInfo(name=name, klass=klass, xid=0)
        dvm = info.template_for_dispvms
        own = {}
        for key, wanted in FEATURES.items():
            value = b.feature(name, key) if wanted(klass, dvm) else None
            if value is not None:
                own[key] = value
        if klass == "DispVM" or dvm:
            state = b.power_state(name)
        else:
            state = "Running" if info.xid >= 0 else "Halted"
        return Qube(
            name=name, klass=klass, template=info.template, netvm=info.netvm,
            default_dispvm=info.default_dispvm, template_for_dispvms=dvm,
            auto_cleanup=info.auto_cleanup, power_state=state, tags=b.tags(name),
            features=own, uuid=info.uuid,
            ws=feature_true(b.feature_with_template(name, WS_FEATURE)),
            gw=feature_true(b.feature_with_template(name, GW_FEATURE)))


def _name(value: Any) -> str | None:
    return None if value is None or str(value) == "" else str(value)


def connect(env: Mapping[str, str] | None = None, app: Any = None) -> Source:
    """*app*: a qubesadmin app (as qvm-* tools take it) or a ready Source.
    Without one, the broker's own choose_backend.connect() chooses: the real dom0
    unless WHONIX_OPEN_BACKEND says otherwise (never a fallback)."""
    if isinstance(app, Source):
        return app
    if app is not None:
        from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

        return Source(QubesadminBackend(app), app)
    env = os.environ if env is None else env
    backend = connect_backend(env)
    return Source(backend, getattr(backend, "app", None))  # QubesadminBackend's app
