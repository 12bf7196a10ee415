"""SimBackend: the broker's Backend interface over the simulated Qubes.

Chosen only explicitly (WHONIX_OPEN_BACKEND=sim: the entry point in setup.py,
see dom0/backend.py). Every Admin API call goes through the one model of
qubesd, sim/qubesd.py, by direct call (the socket server, qubesd_server.py,
serves the same model to the real qubesadmin library). Each call is appended
to the shared call log under the state lock, together with its effect, so
concurrent processes see calls and effects in one order. SimBackend makes the
same calls as QubesadminBackend does for each method (see dom0/backend.py),
and parses the same reply text qubesd sends.

Fault knobs come from the state's "faults" (scenario.FAULTS).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from whonix_open.dom0.backend import (
    BackendError,
    QubeInfo,
    QubesdUnreachable,
    parse_get_all,
    qube_info,
)
from whonix_open.sim import qubesd
from whonix_open.sim.state import SIM_DIR_ENV, SimState, StateError

WATCH_INTERVAL = 0.02  # seconds between two looks at the event log
DISPOSABLE_MODULE = "whonix_open.sim.disposable"

# The Admin API method names (what the call log records).
LIST = "admin.vm.List"
GET_ALL = "admin.vm.property.GetAll"
FEATURE_CHECK = "admin.vm.feature.CheckWithTemplate"
FEATURE_GET = "admin.vm.feature.Get"
FEATURE_SET = "admin.vm.feature.Set"
FEATURE_REMOVE = "admin.vm.feature.Remove"
PROPERTY_LIST = "admin.vm.property.List"
CREATE_APPVM = "admin.vm.Create.AppVM"
TAG_LIST = "admin.vm.tag.List"
TAG_SET = "admin.vm.tag.Set"
CREATE_DISPOSABLE = "admin.vm.CreateDisposable"
CREATE_DISPVM = "admin.vm.Create.DispVM"
PROPERTY_SET = "admin.vm.property.Set"
START = "admin.vm.Start"
KILL = "admin.vm.Kill"
REMOVE = "admin.vm.Remove"
CURRENT_STATE = "admin.vm.CurrentState"
EVENTS = "admin.Events"


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of *pid* (to tell a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after ')'.
    return int(stat.rsplit(b")", 1)[1].split()[19])


def kill_processes(records: list[list[int]]) -> None:
    """SIGKILL the recorded [pid, start_time] processes that still are those."""
    for pid, start in records:
        if proc_start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def parse_list_line(line: str) -> tuple[str, dict[str, str]]:
    """One admin.vm.List line: 'name class=X state=Y uuid=Z'."""
    name, _, rest = line.partition(" ")
    return name, dict(item.split("=", 1) for item in rest.split())


def netvm_value(event: Mapping[str, Any]) -> str | None:
    """What watch_netvm reports for one event: the new name ('' for none) of
    a property-set:netvm; None for a reset/del (the value is then unknown).
    qubesd sends None as the text 'None' (send_event uses str())."""
    if event["event"] != "property-set:netvm":
        return None
    value = event["kwargs"].get("newvalue", "")
    return "" if value in ("", "None") else value



class SimBackend:
    """dom0/backend.py's Backend over a sim directory's state."""

    def __init__(self, sim_dir: str | os.PathLike[str], src: str = "dom0") -> None:
        self._state = SimState(sim_dir)
        self._calls = 0
        self._src = src

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimBackend:
        directory = env.get(SIM_DIR_ENV)
        if not directory:
            raise BackendError(f"the simulated backend needs {SIM_DIR_ENV}")
        backend = cls(directory)
        if not backend._state.path.exists():
            raise BackendError(f"no simulated Qubes in {directory}")
        return backend

    @property
    def calls(self) -> int:
        return self._calls

    def _call(self, method: str, dest: str, arg: str = "", payload: bytes = b"",
              extra: Callable[[dict[str, Any], Any], Any] | None = None) -> Any:
        """One Admin API call through the qubesd model, logged, atomically.
        A qubesd error is raised after the call (and whatever it changed
        before raising) is written, as qubesd would have logged it. *extra*
        runs under the same lock with the reply (for run_service)."""
        self._calls += 1
        return call_logged(self._state, qubesd.Call(method, self._src, dest, arg, payload,
                                                    processes=kill_processes), extra)


    # --- reads -------------------------------------------------------------

    def qube_classes(self) -> dict[str, str]:
        text = self._call(LIST, "dom0")
        return {name: fields["class"]
                for name, fields in map(parse_list_line, text.splitlines())}

    def info(self, name: str) -> QubeInfo:
        return qube_info(name, parse_get_all(self._call(GET_ALL, name)))

    def feature_with_template(self, name: str, key: str) -> str | None:
        try:
            return self._call(FEATURE_CHECK, name, key)
        except qubesd.FeatureNotFound:
            return None

    def feature(self, name: str, key: str) -> str | None:
        try:
            return self._call(FEATURE_GET, name, key)
        except qubesd.FeatureNotFound:
            return None

    def tags(self, name: str) -> frozenset[str]:
        return frozenset(self._call(TAG_LIST, name).split())

    def add_tag(self, name: str, tag: str) -> None:
        self._call(TAG_SET, name, tag)

    def power_state(self, name: str) -> str:
        text = self._call(CURRENT_STATE, name)
        return dict(item.split("=", 1) for item in text.split())["power_state"]

    # --- changes -----------------------------------------------------------

    def set_feature(self, name: str, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise BackendError("feature values are strings")
        self._call(FEATURE_SET, name, key, value.encode("ascii"))

    def create_disposable(self, dvm: str) -> str:
        return self._call(CREATE_DISPOSABLE, dvm)

    def create_dispvm(self, dvm: str, name: str, label: str) -> None:
        self._call(CREATE_DISPVM, "dom0", dvm, f"name={name} label={label}".encode("ascii"))

    def set_property(self, name: str, key: str, value: str | None) -> None:
        self._call(PROPERTY_SET, name, key, (value or "").encode("ascii"))

    def start(self, name: str) -> None:
        delay = self._call(START, name)
        if delay:
            # A slow boot: the call is under way but holds no lock meanwhile.
            time.sleep(delay)
            try:
                with self._state.transaction() as st:
                    qubesd.boot(st, name, slow=True)
            except StateError as e:
                raise QubesdUnreachable(str(e)) from None

    def kill(self, name: str) -> None:
        self._call(KILL, name)

    def remove(self, name: str) -> None:
        self._call(REMOVE, name)

    def create_appvm(self, template: str, name: str, label: str) -> None:
        self._call(CREATE_APPVM, "dom0", template, f"name={name} label={label}".encode("ascii"))

    def remove_feature(self, name: str, key: str) -> None:
        self._call(FEATURE_REMOVE, name, key)

    def property_names(self, name: str) -> frozenset[str]:
        return frozenset(self._call(PROPERTY_LIST, name).split())

    # --- the file stream ---------------------------------------------------

    def run_service(self, name: str, service: str, *, stdin: int | IO[bytes],
                    stdout: int | IO[bytes], connect_timeout: int) -> subprocess.Popen[bytes]:
        # No Admin API call: dom0's qrexec-client (here: the state) reaches
        # only a running qube.
        def op(st: dict[str, Any]) -> subprocess.Popen[bytes]:
            q = st["qubes"].get(name)
            if q is None or q["power_state"] != "Running":
                raise BackendError(f"qrexec-client: {name} is not running")
            # Spawned under the state lock, so a concurrent kill either came
            # first (and we refused) or will find this pid.
            log_dir = self._state.dir / "logs"
            log_dir.mkdir(exist_ok=True)
            started = time.monotonic()  # system-wide clock: comparable across processes
            with open(log_dir / f"{name}.log", "ab") as err:
                try:
                    proc = subprocess.Popen(self._disposable_side(st, name, service),
                                            stdin=stdin, stdout=stdout, stderr=err)
                except OSError as e:
                    raise BackendError(f"cannot run {service} in {name}: {e}") from None
            st["processes"].setdefault(name, []).append([proc.pid, proc_start_time(proc.pid)])
            # with what the qube has when the caller's data reaches it
            st["services"].append({"qube": name, "service": service, "pid": proc.pid,
                                   "connect_timeout": connect_timeout, "t": started,
                                   **{p: qubesd.prop_value(st, name, p)[1]
                                      for p in ("netvm", "default_dispvm")}})
            return proc
        try:
            with self._state.transaction() as st:
                return op(st)
        except StateError as e:
            raise QubesdUnreachable(str(e)) from None

    def _disposable_side(self, st: dict[str, Any], name: str, service: str) -> list[str]:
        if (service == "qubes.OpenInVM"
                and st["faults"].get("disposable_behaviour") == "cat"):
            # What disposable.py would exec anyway, without a Python start
            # eating into the throughput being measured.
            return ["cat"]
        return [sys.executable, "-m", DISPOSABLE_MODULE, "--sim-dir", str(self._state.dir),
                "--qube", name, "--caller", "dom0", "--service", service]

    def watch_netvm(self, name: str,
                    on_change: Callable[[str | None], None]) -> Callable[[], None]:
        """One admin.Events call on the qube, then the model's event log is
        followed (what the socket server streams)."""
        first = self._call(EVENTS, name)
        stop = threading.Event()

        def fire(value: str | None) -> None:
            with contextlib.suppress(Exception):  # a broken callback must not end the watch
                on_change(value)

        def loop() -> None:
            seq = first
            while not stop.wait(WATCH_INTERVAL):
                try:
                    st = self._state.read()
                except StateError:
                    st = None
                if st is None or st["faults"].get("qubesd_unreachable"):
                    fire(None)  # the stream would have broken
                    return
                for event in qubesd.events_after(st, seq, name):
                    seq = event["n"]
                    if event["event"] in NETVM_EVENTS:
                        fire(netvm_value(event))

        thread = threading.Thread(target=loop, name=f"sim-watch-{name}", daemon=True)
        thread.start()

        def stop_watching() -> None:
            stop.set()
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        return stop_watching


NETVM_EVENTS = ("property-set:netvm", "property-reset:netvm", "property-del:netvm")


def call_logged(state: SimState, c: qubesd.Call,
                extra: Callable[[dict[str, Any], Any], Any] | None = None) -> Any:
    """Log *c* in the state's call log and apply it through the model, under
    the state lock. Shared by SimBackend and the socket server."""
    failure: BackendError | None = None
    result: Any = None
    slow = _slow(state, c.method)
    if slow and slow[0] == "before":  # the call is on its way; qubesd has not run it
        with state.transaction() as st:
            st.setdefault("paused", []).append({"method": c.method, "dest": c.dest,
                                                "pid": os.getpid()})
        time.sleep(slow[1])
    try:
        with state.transaction() as st:
            if st["faults"].get("qubesd_unreachable"):
                raise QubesdUnreachable("qubesd is not reachable (simulated)")
            entry = {"method": c.method, "dest": c.dest, "arg": c.arg, "pid": os.getpid()}
            if c.payload:
                entry["payload"] = c.payload.decode("ascii", "replace")
            st["calls"].append(entry)
            try:
                result = qubesd.call(st, c)
                if extra is not None:
                    result = extra(st, result)
            except BackendError as e:
                failure = e
    except StateError as e:
        raise QubesdUnreachable(str(e)) from None
    if slow and slow[0] == "after":  # qubesd has done it; the answer is on its way
        time.sleep(slow[1])
    if failure is not None:
        raise failure
    return result


def _slow(state: SimState, method: str) -> tuple[str, float] | None:
    """The slow_call fault ([method, "before"|"after", seconds]) for *method*."""
    try:
        slow = state.read()["faults"].get("slow_call")
    except StateError:
        return None
    return (slow[1], slow[2]) if slow and slow[0] == method else None
