"""The qubesadmin adapter against a stand-in `qubesadmin` module.

qubesadmin is a dom0 package (not on PyPI), so these tests put a minimal
module with the same public names in sys.modules. They check what the
adapter asks of the library: the documented calls, arguments and exception
types (qubesadmin/vm/__init__.py, app.py, exc.py, events/__init__.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import types

import pytest

from whonix_open.dom0.backend import BackendError, NoSuchQube, NotRunning, QubesdUnreachable


class QubesException(Exception):
    pass


class QubesVMNotFoundError(QubesException, KeyError):
    pass


class QubesVMNotStartedError(QubesException):
    pass


class QubesVMNotRunningError(QubesVMNotStartedError):
    pass


class QubesDaemonCommunicationError(QubesException):
    pass


class QubesDaemonAccessError(QubesDaemonCommunicationError):
    pass


QubesDaemonNoResponseError = QubesDaemonAccessError  # upstream: the legacy name


class QubesPropertyAccessError(QubesDaemonAccessError, AttributeError):
    pass


class Features(dict):
    def __init__(self, vm, values):
        super().__init__(values)
        self.vm = vm

    def check_with_template(self, key, default):
        if key in self:
            return self[key]
        template = getattr(self.vm, "template", None)
        return template.features.check_with_template(key, default) if template else default

    def __setitem__(self, key, value):
        self.vm.app.log.append(("feature.Set", self.vm.name, key, value))
        super().__setitem__(key, value)


class VM:
    """Like qubesadmin.vm.QubesVM with app.cache_enabled: the power state is
    kept once read, until the object is dropped (or an event updates it)."""

    def __init__(self, app, name, props, features):
        self.app, self.name, self.props = app, name, props
        self.features = Features(self, features)
        self.power_state_cache = None

    def __str__(self):
        return self.name

    def __getattr__(self, item):
        if item in ("app", "name", "props"):
            raise AttributeError(item)
        if self.app.missing == self.name:
            raise QubesVMNotFoundError(self.name)
        if item not in self.props:
            raise AttributeError(item)
        value = self.props[item]
        if isinstance(value, Exception):
            raise value
        return self.app.domains.get_blind(value) if item in ("template", "netvm",
                                                             "default_dispvm") and value else value

    def __setattr__(self, key, value):
        if key in ("app", "name", "props", "features", "power_state_cache"):
            return object.__setattr__(self, key, value)
        self.app.log.append(("property.Set", self.name, key, value))
        self.props[key] = value
        return None

    def start(self):
        self.app.log.append(("Start", self.name))

    def kill(self):
        if self.props.get("state") == "Halted":
            raise QubesVMNotRunningError(self.name)
        self.app.log.append(("Kill", self.name))

    def get_power_state(self):
        if self.power_state_cache is not None:
            return self.power_state_cache
        state = self.props.get("state", "Halted")
        if self.app.cache_enabled:
            self.power_state_cache = state
        return state

    def is_running(self):
        return self.get_power_state() not in ("Halted", "NA")


class Domains:
    """qubesadmin.app.VMCollection: objects are cached by name."""

    def __init__(self, app):
        self.app, self.data, self.vms = app, {}, {}

    def get_blind(self, name):
        if name not in self.vms:
            props, features = self.data.setdefault(name, ({}, {}))
            self.vms[name] = VM(self.app, name, props, features)
        return self.vms[name]

    def clear_cache(self, invalidate_name=None):
        if invalidate_name:
            self.vms.pop(invalidate_name, None)

    def __delitem__(self, name):
        self.app.log.append(("Remove", name))


class App:
    def __init__(self):
        self.log, self.missing, self.cache_enabled = [], None, False
        self.domains = Domains(self)

    def add(self, name, features=None, **props):
        self.domains.data[name] = (props, features or {})
        self.domains.vms.pop(name, None)

    def run_service(self, dest, service, autostart=True, **kwargs):
        # QubesLocal.run_service: autostart=False checks the power state
        if not autostart and not self.domains.get_blind(dest).is_running():
            raise QubesVMNotRunningError(f"{dest} is not running")
        self.log.append(("run_service", dest, service, {"autostart": autostart, **kwargs}))
        return "popen"


class DispVMWrapper:
    def __init__(self, app, dvm):
        self.app, self.dvm, self.name = app, dvm, "@dispvm:" + dvm

    def create_disposable(self):
        self.app.log.append(("CreateDisposable", self.dvm))
        self.name = "disp1234"


class EventsDispatcher:
    def __init__(self, app):
        self.app, self.handlers = app, {}

    def add_handler(self, event, handler):
        self.handlers.setdefault(event, []).append(handler)

    async def listen_for_events(self, vm=None, reconnect=True):
        assert reconnect is False
        for h in self.handlers["connection-established"]:
            h(None, "connection-established")
        await asyncio.sleep(0.05)
        for h in self.handlers["property-set:netvm"]:
            h(vm, "property-set:netvm", newvalue="sys-net")
        await asyncio.sleep(3600)


@pytest.fixture
def app(monkeypatch):
    exc = types.SimpleNamespace(
        QubesException=QubesException, QubesVMNotFoundError=QubesVMNotFoundError,
        QubesVMNotStartedError=QubesVMNotStartedError,
        QubesVMNotRunningError=QubesVMNotRunningError,
        QubesDaemonNoResponseError=QubesDaemonNoResponseError,
        QubesDaemonAccessError=QubesDaemonAccessError,
        QubesDaemonCommunicationError=QubesDaemonCommunicationError,
        QubesPropertyAccessError=QubesPropertyAccessError)
    vm_mod = types.SimpleNamespace(DispVM=types.SimpleNamespace(
        from_appvm=lambda app, dvm: DispVMWrapper(app, dvm)))
    events = types.SimpleNamespace(EventsDispatcher=EventsDispatcher)
    qubesadmin = types.ModuleType("qubesadmin")
    qubesadmin.exc, qubesadmin.vm, qubesadmin.events = exc, vm_mod, events
    qubesadmin.Qubes = App
    for name, mod in (("qubesadmin", qubesadmin), ("qubesadmin.exc", exc),
                      ("qubesadmin.vm", vm_mod), ("qubesadmin.events", events)):
        monkeypatch.setitem(sys.modules, name, mod)
    a = App()
    a.add("whonix-workstation-18", features={"whonix-ws": "1"}, klass="TemplateVM")
    a.add("dvm", klass="AppVM", template="whonix-workstation-18", netvm="sys-whonix",
          template_for_dispvms=True, qrexec_timeout=90)
    return a


@pytest.fixture
def backend(app):
    from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

    return QubesadminBackend(app)


def test_module_does_not_import_qubesadmin_at_import_time():
    code = ("import sys, whonix_open.dom0.qubesadmin_backend, whonix_open.dom0.service;"
            "assert 'qubesadmin' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_info_reads_fresh_with_cache_enabled(backend, app):
    first = app.domains.get_blind("dvm")
    info = backend.info("dvm")
    assert app.cache_enabled is True
    assert app.domains.get_blind("dvm") is not first  # a new object: nothing cached
    assert (info.klass, info.template, info.netvm, info.template_for_dispvms,
            info.auto_cleanup, info.qrexec_timeout) == (
        "AppVM", "whonix-workstation-18", "sys-whonix", True, False, 90)


def test_a_property_that_cannot_be_read_is_an_error_not_a_default(backend, app):
    """qubesadmin's QubesPropertyAccessError is an AttributeError: getattr()
    with a default would turn an unreadable netvm into None, i.e. offline."""
    app.add("disp1", klass="DispVM", template="dvm", auto_cleanup=True,
            netvm=QubesPropertyAccessError("netvm"))
    with pytest.raises(BackendError):
        backend.info("disp1")
    app.add("tpl", klass="TemplateVM")  # properties it does not have: defaults
    assert backend.info("tpl").template is None


def test_power_state_is_never_stale(backend, app):
    """With cache_enabled, qubesadmin keeps a qube object's power state; the
    disposable is read as Halted, started, and must then read as Running -
    also for run_service's autostart=False check."""
    app.add("disp1234", klass="DispVM", state="Halted")
    assert backend.power_state("disp1234") == "Halted"
    app.domains.data["disp1234"][0]["state"] = "Running"  # started meanwhile
    assert backend.power_state("disp1234") == "Running"
    backend.power_state("disp1234")
    app.domains.data["disp1234"][0]["state"] = "Halted"
    with pytest.raises(NotRunning):  # died since: never started again
        backend.run_service("disp1234", "qubes.OpenInVM", stdin=0, stdout=1,
                            connect_timeout=5)
    app.domains.data["disp1234"][0]["state"] = "Running"
    backend.run_service("disp1234", "qubes.OpenInVM", stdin=0, stdout=1, connect_timeout=5)


def test_features_walk_the_template(backend):
    assert backend.feature_with_template("dvm", "whonix-ws") == "1"
    assert backend.feature_with_template("dvm", "whonix-gw") is None
    assert backend.feature("dvm", "whonix-ws") is None


def test_create_disposable_uses_dispvm_from_appvm(backend, app):
    assert backend.create_disposable("dvm") == "disp1234"
    assert ("CreateDisposable", "dvm") in app.log


def test_set_netvm_none_and_marker(backend, app):
    backend.set_netvm("disp1234", None)
    backend.set_feature("disp1234", "whonix-open-session", "s1")
    assert ("property.Set", "disp1234", "netvm", None) in app.log
    assert ("feature.Set", "disp1234", "whonix-open-session", "s1") in app.log


def test_run_service_never_autostarts_and_passes_fds(backend, app):
    app.add("disp1234", klass="DispVM", state="Running")
    backend.run_service("disp1234", "qubes.OpenInVM", stdin=5, stdout=6, connect_timeout=90)
    (_, dest, service, kwargs), = [e for e in app.log if e[0] == "run_service"]
    assert (dest, service) == ("disp1234", "qubes.OpenInVM")
    assert kwargs == {"autostart": False, "stdin": 5, "stdout": 6,
                      "stderr": subprocess.DEVNULL, "connect_timeout": 90}


def test_exceptions_are_translated(backend, app):
    app.missing = "ghost"
    with pytest.raises(NoSuchQube):
        backend.info("ghost")
    app.add("halted", state="Halted")
    with pytest.raises(NotRunning):
        backend.kill("halted")

    def boom():
        raise QubesDaemonNoResponseError("down")

    object.__setattr__(app.domains.get_blind("x"), "start", boom)
    with pytest.raises(QubesdUnreachable):
        backend.start("x")

    def refuse():
        raise QubesException("nope")

    object.__setattr__(app.domains.get_blind("y"), "start", refuse)
    with pytest.raises(BackendError):
        backend.start("y")


def test_watch_netvm_waits_for_the_stream_and_reports_changes(backend):
    fired = threading.Event()
    values = []
    stop = backend.watch_netvm("dvm", lambda value: (values.append(value), fired.set()))
    assert fired.wait(10)
    stop()


def test_watch_netvm_fails_at_once_when_the_stream_ends_before_it_is_up(backend, monkeypatch):
    """qubesd refusing admin.Events (or gone) ends listen_for_events() with
    reconnect=False before connection-established: no 10 s wait for it."""
    async def ends_at_once(self, vm=None, reconnect=True):
        return None

    monkeypatch.setattr(EventsDispatcher, "listen_for_events", ends_at_once)
    started = time.monotonic()
    with pytest.raises(BackendError):
        backend.watch_netvm("dvm", lambda _value: None)
    assert time.monotonic() - started < 5
