"""QubesadminBackend with the real qubesadmin library against the qubesd
stand-in: what the library really does, and what the backend makes of it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.helpers import wait_for
from whonix_open.dom0.backend import BackendError, NoSuchQube, NotRunning, QubesdUnreachable

DVM = "whonix-workstation-18-dvm"


@pytest.fixture
def backend(qubesd):
    from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

    return QubesadminBackend(env={"WHONIX_OPEN_QUBESD_SOCKET": qubesd.socket_path})


def test_module_does_not_import_qubesadmin_at_import_time():
    code = ("import sys, whonix_open.dom0.qubesadmin_backend, whonix_open.dom0.service;"
            "assert 'qubesadmin' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_broker_core_never_imports_the_simulation():
    code = ("import sys, whonix_open.dom0.service, whonix_open.dom0.choose_backend as b;"
            "b.connect({'WHONIX_OPEN_BACKEND': 'sim', 'WHONIX_OPEN_SIM_DIR': '/nonexistent'})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "no simulated Qubes" in r.stderr  # offered through its entry point
    code = ("import sys, whonix_open.dom0.service, whonix_open.dom0.routing_status;"
            "assert not [m for m in sys.modules if m.startswith('whonix_open.sim')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_qube_classes_works_where_iterating_app_domains_fails(backend):
    """Issue 12 (1): a cached `dom0` object (reached through guivm/audiovm)
    makes qubesadmin ask its class with admin.vm.List on dom0, which lists
    every qube; qubesadmin's own assertion then fails."""
    backend.info("anon-whonix")
    backend.app.domains.get_blind("dom0")  # what a guivm/audiovm read leaves behind
    assert backend.qube_classes()[DVM] == "AppVM"
    backend.app.domains.clear_cache()
    if _qubesadmin_version() >= (4, 3):  # 4.2.18 lists without asking dom0's class
        with pytest.raises(AssertionError):
            list(backend.app.domains)  # the library itself, as the old backend used it


def _qubesadmin_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(x) for x in version("qubesadmin").split(".")[:2])


def test_info_reads_properties_and_defaults(backend):
    info = backend.info(DVM)  # one GetAll: the stateless klass and xid included
    assert (info.klass, info.template, info.netvm, info.template_for_dispvms,
            info.xid) == ("AppVM", "whonix-workstation-18", "sys-whonix", True, -1)
    assert backend.info("sys-whonix").xid >= 0  # running
    assert backend.info("whonix-workstation-18").template is None  # a TemplateVM has none
    name = backend.create_disposable(DVM)
    disp = backend.info(name)
    # qubesd: a disposable's default_dispvm defaults to its DVM template
    assert (disp.klass, disp.template, disp.auto_cleanup, disp.default_dispvm) == (
        "DispVM", DVM, True, DVM)
    assert backend.tags(name) >= {"created-by-dom0", "disp-created-by-dom0", "anon-vm"}
    backend.set_property(name, "default_dispvm", None)
    assert backend.info(name).default_dispvm is None


def test_create_dispvm_never_uses_the_queue(backend, sim):
    sim.set_feature(DVM, "preload-dispvm-max", "2")
    sim.settle()
    ready = sim.preloads(DVM)
    backend.create_dispvm(DVM, "disp42", "red")
    info = backend.info("disp42")
    assert (info.klass, info.xid, info.auto_cleanup, info.label) == (
        "DispVM", -1, False, "red")
    assert backend.tags("disp42") >= {"created-by-dom0"}
    assert sim.preloads(DVM) == ready
    with pytest.raises(BackendError):
        backend.create_dispvm(DVM, "disp42", "red")  # the name is taken


def test_power_state_raises_where_get_power_state_answers_na(backend, sim):
    assert backend.power_state("sys-whonix") == "Running"
    assert backend.app.domains.get_blind("ghost").get_power_state() == "NA"  # upstream
    with pytest.raises(NoSuchQube):
        backend.power_state("ghost")
    sim.set_fault("qubesd_refuses", ["admin.vm.CurrentState"])
    with pytest.raises(BackendError):
        backend.power_state("sys-whonix")


def test_a_refused_property_read_is_an_error_not_a_default(backend, sim):
    """A netvm that could not be read must never read as None, i.e. offline."""
    sim.set_fault("qubesd_refuses", ["admin.vm.property.GetAll", "admin.vm.property.Get"])
    with pytest.raises(BackendError):
        backend.info(DVM)


def test_exceptions_are_translated(backend, sim, qubesd, tmp_path):
    with pytest.raises(NoSuchQube):
        backend.info("ghost")
    with pytest.raises(NotRunning):
        backend.kill(DVM)  # halted
    sim.set_fault("qubesd_unreachable", True)
    with pytest.raises(QubesdUnreachable):
        backend.start(DVM)
    from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

    gone = QubesadminBackend(env={"WHONIX_OPEN_QUBESD_SOCKET": str(tmp_path / "none.sock")})
    with pytest.raises(QubesdUnreachable):
        gone.qube_classes()


def test_watch_netvm_reports_values_over_admin_events(backend, sim):
    name = backend.create_disposable(DVM)
    backend.start(name)
    seen: list[str | None] = []
    stop = backend.watch_netvm(name, seen.append)
    try:
        backend.set_property(name, "netvm", "sys-whonix")
        backend.set_property(name, "netvm", None)
        backend.app.qubesd_call(name, "admin.vm.property.Reset", "netvm")
        wait_for(lambda: len(seen) >= 3, "three netvm events")
        assert seen[:3] == ["sys-whonix", "", None]
    finally:
        stop()


def test_watch_netvm_reports_a_broken_stream(backend, sim):
    seen: list[str | None] = []
    fired = threading.Event()
    stop = backend.watch_netvm(DVM, lambda v: (seen.append(v), fired.set()))
    sim.set_fault("qubesd_unreachable", True)
    assert fired.wait(30)
    assert seen == [None]
    stop()


def test_watch_netvm_fails_at_once_when_the_stream_cannot_come_up(backend):
    started = time.monotonic()
    with pytest.raises(BackendError):
        backend.watch_netvm("ghost", lambda _v: None)
    assert time.monotonic() - started < 5
