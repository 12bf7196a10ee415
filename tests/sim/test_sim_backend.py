"""SimBackend: the Backend interface with upstream Qubes semantics and faults."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from sim_helpers import open_in, running_disposable

from whonix_open.dom0 import backend as iface
from whonix_open.dom0 import choose_backend
from whonix_open.dom0.backend import (
    BackendError,
    NoSuchQube,
    NotRunning,
    QubesdUnreachable,
)
from whonix_open.sim.backend import SimBackend
from whonix_open.sim.harness import SimQubes

DVM = "whonix-workstation-18-dvm"


def methods(sim: SimQubes, pid: int | None = None) -> list[tuple[str, str]]:
    return [(c["method"], c["dest"]) for c in sim.calls() if pid is None or c["pid"] == pid]


def test_implements_every_backend_method() -> None:
    wanted = {n for n, _ in inspect.getmembers(iface.Backend) if not n.startswith("_")}
    for name in wanted:
        assert hasattr(SimBackend, name), name
        if name != "calls":
            want = inspect.signature(getattr(iface.Backend, name)).parameters
            got = inspect.signature(getattr(SimBackend, name)).parameters
            assert list(want) == list(got), name


def test_selected_only_explicitly(sim: SimQubes, tmp_path) -> None:
    b = choose_backend.connect({"WHONIX_OPEN_BACKEND": "sim", "WHONIX_OPEN_SIM_DIR": str(sim.dir)})
    assert isinstance(b, SimBackend)
    with pytest.raises(BackendError, match="WHONIX_OPEN_SIM_DIR"):
        SimBackend.from_env({})
    with pytest.raises(BackendError, match="no simulated Qubes"):
        SimBackend.from_env({"WHONIX_OPEN_SIM_DIR": str(tmp_path / "empty")})
    with pytest.raises(BackendError, match="unknown WHONIX_OPEN_BACKEND"):
        choose_backend.connect({"WHONIX_OPEN_BACKEND": "simm"})
    injected = SimBackend(sim.dir)
    choose_backend.use_backend("injected", lambda env: injected)  # as a test or tool would
    assert choose_backend.connect({"WHONIX_OPEN_BACKEND": "injected"}) is injected


def test_reads_and_call_log(sim: SimQubes, backend: SimBackend) -> None:
    assert backend.qube_classes()["sys-whonix"] == "AppVM"
    info = backend.info("anon-whonix")
    assert (info.klass, info.template, info.netvm, info.default_dispvm) == \
        ("AppVM", "whonix-workstation-18", "sys-whonix", DVM)
    assert backend.power_state("sys-whonix") == "Running"
    assert backend.feature("whonix-workstation-18", "whonix-ws") == "1"
    with pytest.raises(NoSuchQube):
        backend.info("ghost")
    assert backend.calls == 5
    assert sim.calls() == [
        {"method": "admin.vm.List", "dest": "dom0", "arg": "", "pid": os.getpid()},
        {"method": "admin.vm.property.GetAll", "dest": "anon-whonix", "arg": "",
         "pid": os.getpid()},
        {"method": "admin.vm.CurrentState", "dest": "sys-whonix", "arg": "", "pid": os.getpid()},
        {"method": "admin.vm.feature.Get", "dest": "whonix-workstation-18", "arg": "whonix-ws",
         "pid": os.getpid()},
        {"method": "admin.vm.property.GetAll", "dest": "ghost", "arg": "", "pid": os.getpid()},
    ]


def test_features_check_with_template_walks_the_chain(backend: SimBackend) -> None:
    disp = backend.create_disposable(DVM)
    assert backend.feature(disp, "whonix-ws") is None  # not its own feature ...
    assert backend.feature_with_template(disp, "whonix-ws") == "1"  # ... but inherited
    assert backend.feature_with_template("sys-whonix", "whonix-gw") == "1"
    assert backend.feature_with_template("sys-firewall", "whonix-gw") is None
    backend.set_feature("sys-firewall", "whonix-gw", "1")  # set on the qube itself
    assert backend.feature_with_template("sys-firewall", "whonix-gw") == "1"
    with pytest.raises(BackendError):
        backend.set_feature("sys-firewall", "x", 1)  # type: ignore[arg-type]


def test_create_disposable_like_upstream(sim: SimQubes, backend: SimBackend) -> None:
    name = backend.create_disposable(DVM)
    assert re.fullmatch(r"disp([1-9][0-9]{0,3})", name)
    q = sim.qube(name)
    assert q["klass"] == "DispVM" and q["template"] == DVM
    assert q["auto_cleanup"] is True
    assert q["power_state"] == "Halted"
    assert q["netvm"] == "sys-whonix"  # from the DVM template, until set
    assert backend.info(name).default_dispvm == DVM  # the default: its DVM template
    assert q["features"] == {"appmenus-dispvm": "1"}
    assert set(q["tags"]) == {"anon-vm", "created-by-dom0", "disp-created-by-dom0",
                              "audiovm-dom0", "guivm-dom0"}  # qubesd's gui/audio tags
    assert sim.disposables() == [name]
    assert ("admin.vm.CreateDisposable", DVM) in methods(sim)
    assert backend.create_disposable(DVM) != name


def test_create_refuses_a_non_dvm(backend: SimBackend) -> None:
    with pytest.raises(BackendError, match="template_for_dispvms"):
        backend.create_disposable("anon-whonix")
    with pytest.raises(NoSuchQube):
        backend.create_disposable("ghost")


def test_netvm_before_start_then_start(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_property("sys-whonix", "power_state", "Halted")
    name = backend.create_disposable(DVM)
    backend.set_property(name, "netvm", None)
    assert sim.qube(name)["netvm"] is None
    backend.set_property(name, "netvm", "sys-whonix")
    backend.start(name)
    assert backend.power_state(name) == "Running"
    assert sim.qube("sys-whonix")["power_state"] == "Running"  # netvm started first
    backend.start(name)  # a running qube: no-op, as in qubesd
    assert methods(sim) == [
        ("admin.vm.CreateDisposable", DVM), ("admin.vm.property.Set", name),
        ("admin.vm.property.Set", name), ("admin.vm.Start", name),
        ("admin.vm.CurrentState", name), ("admin.vm.Start", name)]
    assert [c["arg"] for c in sim.calls() if c["method"] == "admin.vm.property.Set"] == \
        ["netvm", "netvm"]


def test_set_netvm_refuses_what_qubesd_refuses(sim: SimQubes, backend: SimBackend) -> None:
    name = running_disposable(backend)
    with pytest.raises(BackendError, match="does not provide network"):
        backend.set_property(name, "netvm", "vault")
    with pytest.raises(BackendError, match="non-existing qube ghost"):
        backend.set_property(name, "netvm", "ghost")  # QubesPropertyValueError
    sim.set_property("sys-firewall", "power_state", "Halted")
    with pytest.raises(BackendError, match="stopped qube"):
        backend.set_property(name, "netvm", "sys-firewall")  # a running qube needs a running netvm
    with pytest.raises(BackendError):
        backend.set_property("dom0", "netvm", "sys-net")
    assert sim.qube(name)["netvm"] == "sys-whonix"


def test_kill_halts_and_auto_cleanup_removes(sim: SimQubes, backend: SimBackend) -> None:
    name = backend.create_disposable(DVM)
    with pytest.raises(NotRunning):
        backend.kill(name)
    backend.start(name)
    backend.kill(name)
    assert sim.qube(name) is None and sim.disposables() == []
    with pytest.raises(NoSuchQube):
        backend.kill(name)
    backend.kill("personal")  # no auto_cleanup: stays, halted
    assert sim.qube("personal")["power_state"] == "Halted"


def test_remove_only_halted_and_unused(sim: SimQubes, backend: SimBackend) -> None:
    name = running_disposable(backend)
    with pytest.raises(BackendError, match="not powered off"):
        backend.remove(name)
    with pytest.raises(BackendError, match="in use"):
        backend.remove("debian-13")
    with pytest.raises(BackendError):
        backend.remove("dom0")
    sim.set_property(name, "power_state", "Halted")
    backend.remove(name)
    assert sim.disposables() == []


def test_kill_terminates_the_disposable_side(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_fault("disposable_behaviour", "hang")
    name = running_disposable(backend)
    proc, stream = open_in(backend, name, b"x.txt".ljust(256, b"\0") + b"data")
    sim.wait_until(lambda s: s.received())
    assert proc.poll() is None
    backend.kill(name)
    assert proc.wait(timeout=10) == -9  # vanished like a VM, no chance to clean up
    assert stream.finish() == b""


def test_run_service_needs_a_running_qube(sim: SimQubes, backend: SimBackend) -> None:
    name = backend.create_disposable(DVM)
    r, w = os.pipe()
    try:
        with pytest.raises(BackendError, match="not running"):
            backend.run_service(name, "qubes.OpenInVM", stdin=r, stdout=w, connect_timeout=5)
    finally:
        os.close(r)
        os.close(w)
    assert sim.services() == []
    assert methods(sim)[-1] == ("admin.vm.CreateDisposable", DVM)  # qrexec-client: no call


def test_run_service_records_pid_and_timeout(sim: SimQubes, backend: SimBackend) -> None:
    name = running_disposable(backend)
    before = time.monotonic()
    proc, stream = open_in(backend, name, b"a".ljust(256, b"\0"))
    assert proc.wait(timeout=10) == 0
    stream.finish()
    (svc,) = sim.services()
    assert before <= svc.pop("t") <= time.monotonic()  # when the relay started
    assert svc == {"qube": name, "service": "qubes.OpenInVM", "pid": proc.pid,
                   "connect_timeout": 7, "netvm": "sys-whonix",
                   "default_dispvm": "whonix-workstation-18-dvm"}
    assert isinstance(proc, subprocess.Popen)


# --- faults ------------------------------------------------------------------

def test_qubesd_unreachable(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_fault("qubesd_unreachable", True)
    calls = [lambda: backend.qube_classes(), lambda: backend.info("dom0"),
             lambda: backend.feature_with_template("dom0", "x"),
             lambda: backend.feature("dom0", "x"), lambda: backend.set_feature("dom0", "x", "1"),
             lambda: backend.create_disposable(DVM),
             lambda: backend.set_property("vault", "netvm", None),
             lambda: backend.start("vault"), lambda: backend.power_state("vault"),
             lambda: backend.kill("vault"), lambda: backend.remove("vault"),
             lambda: backend.tags("vault"),
             lambda: backend.create_dispvm(DVM, "disp1", "red")]
    for call in calls:
        with pytest.raises(QubesdUnreachable):
            call()
    assert sim.calls() == [] and sim.disposables() == []
    assert backend.calls == len(calls)


def test_missing_state_is_qubesd_unreachable(sim: SimQubes, backend: SimBackend) -> None:
    (sim.dir / "state.json").unlink()
    with pytest.raises(QubesdUnreachable):
        backend.qube_classes()


def test_create_fails(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_fault("create_fails", True)
    with pytest.raises(BackendError):
        backend.create_disposable(DVM)
    assert sim.disposables() == []
    assert methods(sim) == [("admin.vm.CreateDisposable", DVM)]


@pytest.mark.parametrize("keeps", [True, False])
def test_start_fails(sim: SimQubes, backend: SimBackend, keeps: bool) -> None:
    sim.set_fault("start_fails", True)
    sim.set_fault("start_fails_keeps_qube", keeps)
    name = backend.create_disposable(DVM)
    with pytest.raises(BackendError) as e:
        backend.start(name)
    assert not isinstance(e.value, NotRunning)
    if keeps:
        assert sim.disposables() == [name]
        assert backend.power_state(name) == "Halted"
        backend.remove(name)
    assert sim.disposables() == []


def test_preload_hands_out_a_running_disposable(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_feature("dom0", "preload-dispvm-delay", "0")
    sim.set_property(DVM, "netvm", "sys-firewall")
    sim.set_feature(DVM, "preload-dispvm-max", "2")
    sim.settle()
    ready = sim.preloads(DVM)
    assert [sim.qube(n)["power_state"] for n in ready] == ["Paused", "Paused"]
    name = backend.create_disposable(DVM)
    assert name == ready[0]
    assert backend.power_state(name) == "Running"  # unpaused when handed out
    assert backend.info(name).netvm == "sys-firewall"  # booted with the DVM's netvm
    assert sim.qube(name)["booted_with"]["netvm"] == "sys-firewall"
    assert sim.preloads(DVM)[0] == ready[1] and len(sim.preloads(DVM)) == 2  # refilled
    backend.kill(name)
    assert name not in sim.disposables()


def test_netvm_set_on_a_paused_preload_is_deferred(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_feature(DVM, "preload-dispvm-max", "1")
    sim.settle()
    (preload,) = sim.preloads(DVM)
    backend.set_property(preload, "netvm", None)
    assert backend.feature(preload, "deferred-netvm-original") == "sys-whonix"
    # now it differs from its DVM: qubesd discards it instead of handing it out
    name = backend.create_disposable(DVM)
    assert name != preload and sim.qube(preload) is None
    assert sim.qube(name)["power_state"] == "Halted"


def test_netvm_set_ignored(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_fault("netvm_set_ignored", True)
    name = backend.create_disposable(DVM)
    backend.set_property(name, "netvm", None)  # accepted ...
    assert backend.info(name).netvm == "sys-whonix"  # ... but nothing changed
    assert methods(sim)[-2] == ("admin.vm.property.Set", name)


def test_wrong_klass_reads_back_but_stays_a_disposable(sim: SimQubes,
                                                        backend: SimBackend) -> None:
    sim.set_fault("wrong_klass", True)
    name = backend.create_disposable(DVM)
    assert backend.info(name).klass == "AppVM"
    assert backend.qube_classes()[name] == "AppVM"
    assert sim.disposables() == [name]  # the harness sees the truth


@pytest.mark.parametrize(("value", "expected"), [(True, "whonix-workstation-18"),
                                                 ("default-dvm", "default-dvm")])
def test_wrong_template(sim: SimQubes, backend: SimBackend, value, expected: str) -> None:
    sim.set_fault("wrong_template", value)
    name = backend.create_disposable(DVM)
    assert backend.info(name).template == expected
    assert sim.qube(name)["template"] == DVM


# --- watching the netvm ----------------------------------------------------------

class Fired:
    def __init__(self) -> None:
        self.count = 0
        self.values: list[str | None] = []
        self.event = threading.Event()

    def __call__(self, value: str | None) -> None:
        self.count += 1
        self.values.append(value)
        self.event.set()


def test_watch_netvm_fires_on_every_set(sim: SimQubes, backend: SimBackend) -> None:
    name = running_disposable(backend)
    fired = Fired()
    stop = backend.watch_netvm(name, fired)
    try:
        backend.set_property(name, "netvm", "sys-whonix")  # the same value is still a set
        assert fired.event.wait(10)
        fired.event.clear()
        backend.set_property(name, "netvm", None)
        assert fired.event.wait(10)
        sim.wait_until(lambda s: fired.count >= 2)
        assert fired.values == ["sys-whonix", ""]
    finally:
        stop()
    count = fired.count
    backend.set_property(name, "netvm", "sys-whonix")
    backend.info(name)  # some time passes, polled by the (stopped) watcher
    assert fired.count == count


def test_watch_netvm_reports_a_reset_as_unknown(sim: SimQubes, backend: SimBackend) -> None:
    name = running_disposable(backend)
    fired = Fired()
    stop = backend.watch_netvm(name, fired)
    backend._call("admin.vm.property.Reset", name, "netvm")
    # net.py fires property-set:netvm with the default (here none) first, then
    # property-reset and its twin property-del (as the real qubesd does)
    sim.wait_until(lambda s: fired.count >= 3)
    assert fired.values == ["", None, None]
    stop()


def test_watch_netvm_fires_when_watching_breaks(sim: SimQubes, backend: SimBackend) -> None:
    with pytest.raises(NoSuchQube):  # admin.Events on a missing qube fails at once
        backend.watch_netvm("ghost", Fired())
    assert sim.calls()[-1]["method"] == "admin.Events"
    fired = Fired()
    stop = backend.watch_netvm("sys-whonix", fired)
    sim.set_fault("qubesd_unreachable", True)
    assert fired.event.wait(10)
    stop()


def test_watch_netvm_stop_from_the_callback(sim: SimQubes, backend: SimBackend) -> None:
    done = threading.Event()
    stops = []

    def on_change(_value: str | None) -> None:
        stops[0]()
        done.set()
    stops.append(backend.watch_netvm("sys-whonix", on_change))
    sim.set_property("sys-whonix", "netvm", "sys-net")
    assert done.wait(10)


# --- several processes ------------------------------------------------------------

def test_concurrent_processes_lose_no_update(sim: SimQubes) -> None:
    code = ("import sys; from whonix_open.sim.backend import SimBackend\n"
            "b = SimBackend(sys.argv[1])\n"
            "for _ in range(10):\n"
            "    n = b.create_disposable('whonix-workstation-18-dvm');"
            " b.set_property(n, 'netvm', None)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(sim.dir)]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    assert len(sim.disposables()) == 40
    assert len(sim.calls()) == 80
    assert len({c["pid"] for c in sim.calls()}) == 4


def test_start_delay_is_transient_and_holds_no_lock(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_fault("start_delay", 1.5)
    name = backend.create_disposable(DVM)
    other = SimBackend(sim.dir)
    started = threading.Thread(target=backend.start, args=(name,))
    started.start()
    sim.wait_until(lambda s: s.qube(name)["power_state"] == "Transient")
    assert other.power_state(name) == "Transient"  # qubesd still answers meanwhile
    started.join(10)
    assert other.power_state(name) == "Running"


def test_kill_while_starting(sim: SimQubes, backend: SimBackend) -> None:
    sim.set_fault("start_delay", 1.5)
    name = backend.create_disposable(DVM)
    errors = []

    def start() -> None:
        try:
            backend.start(name)
        except BackendError as e:
            errors.append(e)
    started = threading.Thread(target=start)
    started.start()
    sim.wait_until(lambda s: s.qube(name)["power_state"] == "Transient")
    SimBackend(sim.dir).kill(name)
    started.join(10)
    assert len(errors) == 1 and isinstance(errors[0], NoSuchQube)
    assert sim.disposables() == []
