"""SimBackend: the broker's Backend interface over the simulated Qubes.

Chosen only explicitly (WHONIX_OPEN_BACKEND=sim, see dom0/backend.py). Each
method is one Admin API call: it is appended to the shared call log under the
state lock, together with its effect, so concurrent processes see calls and
effects in one order. Behaviour follows qubes-core-admin where the broker can
tell the difference:

- CreateDisposable: name dispNNNN (NNNN random in 1..9999, unused), class
  DispVM, template = the DVM template, auto_cleanup on, the DVM's own features
  (except preload-dispvm*) and tags copied, plus tags created-by-dom0 and
  disp-created-by-dom0; netvm, qrexec_timeout, provides_network cloned from the
  DVM template; default_dispvm = the DVM's, else the DVM itself.
- Start of a running qube does nothing; starting a qube starts its netvm chain;
  with the start_delay fault the qube is 'Transient' while it boots.
- Kill of a halted qube raises NotRunning; a killed auto_cleanup disposable is
  removed at once (upstream: right after its domain-shutdown event).
- Remove refuses a running qube and a qube that others still use.

Fault knobs come from the state's "faults" (scenario.FAULTS).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from whonix_open.dom0.backend import (
    BackendError,
    NoSuchQube,
    NotRunning,
    QubeInfo,
    QubesdUnreachable,
)
from whonix_open.sim.state import SIM_DIR_ENV, SimState, StateError

WATCH_INTERVAL = 0.02  # seconds between two looks at the netvm
DISPOSABLE_MODULE = "whonix_open.sim.disposable"

# The Admin API method names (what the call log records).
LIST = "admin.vm.List"
GET_ALL = "admin.vm.property.GetAll"
FEATURE_CHECK = "admin.vm.feature.CheckWithTemplate"
FEATURE_GET = "admin.vm.feature.Get"
FEATURE_SET = "admin.vm.feature.Set"
CREATE_DISPOSABLE = "admin.vm.CreateDisposable"
PROPERTY_SET = "admin.vm.property.Set"
START = "admin.vm.Start"
KILL = "admin.vm.Kill"
REMOVE = "admin.vm.Remove"
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


def _qube(st: dict[str, Any], name: str) -> dict[str, Any]:
    q = st["qubes"].get(name)
    if q is None:
        raise NoSuchQube(f"no such qube: {name}")
    return q


def _boot(st: dict[str, Any], name: str, slow: bool = False) -> None:
    q = _qube(st, name)  # it may have been killed and removed while booting
    if slow and q["power_state"] != "Transient":
        raise BackendError(f"{name} was stopped while it was starting")
    _start_chain(st, q)
    q["power_state"] = "Running"


def _start_chain(st: dict[str, Any], q: dict[str, Any]) -> None:
    """Start q's netvm, its netvm, ... (qubesd does that before starting q)."""
    seen = set()
    net = q["netvm"]
    while net is not None and net not in seen:
        seen.add(net)
        nq = st["qubes"][net]
        nq["power_state"] = "Running"
        net = nq["netvm"]


class SimBackend:
    """dom0/backend.py's Backend over a sim directory's state."""

    def __init__(self, sim_dir: str | os.PathLike[str]) -> None:
        self._state = SimState(sim_dir)
        self._calls = 0

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

    def _call(self, method: str, dest: str, op: Callable[[dict[str, Any]], Any],
              arg: str = "") -> Any:
        """Log one Admin API call and apply *op* to the state, atomically.
        A BackendError from *op* is raised after the call (and whatever *op*
        changed before raising) is written, as qubesd would have logged it."""
        self._calls += 1
        failure: BackendError | None = None
        slow = self._slow(method)
        if slow and slow[0] == "before":  # the call is on its way; qubesd has not run it
            with self._state.transaction() as st:
                st.setdefault("paused", []).append({"method": method, "dest": dest,
                                                    "pid": os.getpid()})
            time.sleep(slow[1])
        try:
            with self._state.transaction() as st:
                if st["faults"].get("qubesd_unreachable"):
                    raise QubesdUnreachable("qubesd is not reachable (simulated)")
                st["calls"].append({"method": method, "dest": dest, "arg": arg,
                                    "pid": os.getpid()})
                try:
                    result = op(st)
                except BackendError as e:
                    failure = e
        except StateError as e:
            raise QubesdUnreachable(str(e)) from None
        if slow and slow[0] == "after":  # qubesd has done it; the answer is on its way
            time.sleep(slow[1])
        if failure is not None:
            raise failure
        return result

    def _slow(self, method: str) -> tuple[str, float] | None:
        """The slow_call fault ([method, "before"|"after", seconds]) for *method*."""
        try:
            slow = self._state.read()["faults"].get("slow_call")
        except StateError:
            return None
        return (slow[1], slow[2]) if slow and slow[0] == method else None

    # --- reads -------------------------------------------------------------

    def qube_classes(self) -> dict[str, str]:
        return self._call(LIST, "dom0", lambda st: {
            n: q.get("reads_back_as", {}).get("klass", q["klass"])
            for n, q in st["qubes"].items()})

    def info(self, name: str) -> QubeInfo:
        def op(st: dict[str, Any]) -> QubeInfo:
            q = _qube(st, name)
            fake = q.get("reads_back_as", {})
            return QubeInfo(name=name, klass=fake.get("klass", q["klass"]),
                            template=fake.get("template", q["template"]), netvm=q["netvm"],
                            default_dispvm=q["default_dispvm"],
                            template_for_dispvms=q["template_for_dispvms"],
                            auto_cleanup=q["auto_cleanup"],
                            qrexec_timeout=q["qrexec_timeout"])
        return self._call(GET_ALL, name, op)

    def feature_with_template(self, name: str, key: str) -> str | None:
        def op(st: dict[str, Any]) -> str | None:
            q = _qube(st, name)
            while True:
                if key in q["features"]:
                    return q["features"][key]
                if q["template"] is None:
                    return None
                q = st["qubes"][q["template"]]
        return self._call(FEATURE_CHECK, name, op, key)

    def feature(self, name: str, key: str) -> str | None:
        return self._call(FEATURE_GET, name,
                          lambda st: _qube(st, name)["features"].get(key), key)

    def tags(self, name: str) -> frozenset[str]:
        return self._call("admin.vm.tag.List", name,
                          lambda st: frozenset(_qube(st, name)["tags"]))

    def add_tag(self, name: str, tag: str) -> None:
        def op(st: dict[str, Any]) -> None:
            tags = _qube(st, name)["tags"]
            if tag not in tags:
                tags.append(tag)
        self._call("admin.vm.tag.Set", name, op, tag)

    def power_state(self, name: str) -> str:
        return self._call(LIST, name, lambda st: _qube(st, name)["power_state"])

    # --- changes -----------------------------------------------------------

    def set_feature(self, name: str, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise BackendError("feature values are strings")

        def op(st: dict[str, Any]) -> None:
            _qube(st, name)["features"][key] = value
        self._call(FEATURE_SET, name, op, key)

    def create_disposable(self, dvm: str) -> str:
        def op(st: dict[str, Any]) -> str:
            tpl = _qube(st, dvm)
            if not tpl["template_for_dispvms"]:
                raise BackendError(f"{dvm} is not a disposable template "
                                   f"(template_for_dispvms is off)")
            faults = st["faults"]
            if faults.get("create_fails"):
                raise BackendError("CreateDisposable failed (simulated)")
            name = _unused_disp_name(st["qubes"])
            q = {
                "klass": "DispVM", "template": dvm, "netvm": tpl["netvm"],
                "default_dispvm": tpl["default_dispvm"] or dvm,
                "template_for_dispvms": False, "auto_cleanup": True,
                "qrexec_timeout": tpl["qrexec_timeout"],
                "features": {k: v for k, v in tpl["features"].items()
                             if not k.startswith("preload-dispvm")},
                "tags": sorted({*tpl["tags"], "created-by-dom0", "disp-created-by-dom0"}),
                "power_state": "Halted", "provides_network": tpl["provides_network"],
                "netvm_set_count": 0,
            }
            if faults.get("no_auto_cleanup"):
                q["auto_cleanup"] = False  # for real: a kill then leaves it behind
            fake: dict[str, str] = {}
            if faults.get("wrong_klass"):
                fake["klass"] = "AppVM"
            wrong = faults.get("wrong_template")
            if wrong:
                fake["template"] = wrong if isinstance(wrong, str) else tpl["template"]
            if fake:
                q["reads_back_as"] = fake
            if faults.get("preload"):
                # Preloaded ahead of the request: already booted with the DVM's netvm.
                _start_chain(st, q)
                q["power_state"] = "Running"
            st["qubes"][name] = q
            return name
        return self._call(CREATE_DISPOSABLE, dvm, op)

    def set_netvm(self, name: str, netvm: str | None) -> None:
        def op(st: dict[str, Any]) -> None:
            q = _qube(st, name)
            if q["klass"] == "AdminVM":
                raise BackendError("dom0 has no netvm")
            if netvm is not None:
                nq = st["qubes"].get(netvm)
                if nq is None or netvm == name or not nq["provides_network"]:
                    raise BackendError(f"netvm {netvm} does not exist or provides no network")
                if q["power_state"] != "Halted" and nq["power_state"] != "Running":
                    raise BackendError(f"netvm {netvm} is not running")
            if st["faults"].get("netvm_set_ignored"):
                return
            q["netvm"] = netvm
            q["netvm_set_count"] = q.get("netvm_set_count", 0) + 1
        self._call(PROPERTY_SET, name, op, "netvm")

    def start(self, name: str) -> None:
        def op(st: dict[str, Any]) -> float:
            q = _qube(st, name)
            if q["power_state"] != "Halted":
                return 0  # qubesd: starting a running qube is a no-op
            if st["faults"].get("start_fails"):
                if (not st["faults"].get("start_fails_keeps_qube", True)
                        and q["auto_cleanup"]):
                    del st["qubes"][name]
                raise BackendError(f"{name} failed to start (simulated)")
            delay = st["faults"].get("start_delay", 0)
            if delay:
                q["power_state"] = "Transient"  # what qubesd reports while it boots
            else:
                _boot(st, name)
            return delay

        delay = self._call(START, name, op)
        if delay:
            # A slow boot: the call is under way but holds no lock meanwhile.
            time.sleep(delay)
            try:
                with self._state.transaction() as st:
                    _boot(st, name, slow=True)
            except StateError as e:
                raise QubesdUnreachable(str(e)) from None

    def kill(self, name: str) -> None:
        def op(st: dict[str, Any]) -> None:
            q = _qube(st, name)
            if q["klass"] == "AdminVM":
                raise BackendError("dom0 cannot be killed")
            if q["power_state"] == "Halted":
                raise NotRunning(f"{name} is not running")
            if st["faults"].get("kill_fails", 0) > 0:
                st["faults"]["kill_fails"] -= 1
                raise BackendError(f"libvirt refused to kill {name} (simulated)")
            # The VM vanishes: whatever ran in it dies without a chance to clean up.
            kill_processes(st["processes"].pop(name, []))
            q["power_state"] = "Halted"
            if q["auto_cleanup"]:
                del st["qubes"][name]
        self._call(KILL, name, op)

    def remove(self, name: str) -> None:
        def op(st: dict[str, Any]) -> None:
            q = _qube(st, name)
            if q["klass"] == "AdminVM":
                raise BackendError("dom0 cannot be removed")
            if q["power_state"] != "Halted":
                raise BackendError(f"{name} is not halted")
            users = sorted(n for n, o in st["qubes"].items() if n != name and name in
                           (o["template"], o["netvm"], o["default_dispvm"]))
            if users:
                raise BackendError(f"{name} is in use by {', '.join(users)}")
            del st["qubes"][name]
            st["processes"].pop(name, None)
        self._call(REMOVE, name, op)

    # --- the file stream ---------------------------------------------------

    def run_service(self, name: str, service: str, *, stdin: int | IO[bytes],
                    stdout: int | IO[bytes], connect_timeout: int) -> subprocess.Popen[bytes]:
        def op(st: dict[str, Any]) -> subprocess.Popen[bytes]:
            if _qube(st, name)["power_state"] != "Running":
                raise NotRunning(f"{name} is not running")
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
            st["services"].append({"qube": name, "service": service, "pid": proc.pid,
                                   "connect_timeout": connect_timeout, "t": started})
            return proc
        return self._call(LIST, name, op)

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
        """Poll the state. Subscribing is logged as one admin.Events call, as
        the real backend opens an admin.Events stream for it."""
        import threading

        def look() -> tuple[str | None, int] | None:
            st = self._state.read()
            q = st["qubes"].get(name)
            if q is None or st["faults"].get("qubesd_unreachable"):
                return None  # gone, or the event stream would have broken
            return q["netvm"], q.get("netvm_set_count", 0)

        def subscribe(st: dict[str, Any]) -> tuple[str | None, int]:
            q = _qube(st, name)
            return q["netvm"], q.get("netvm_set_count", 0)

        first = self._call(EVENTS, name, subscribe)
        stop = threading.Event()

        def fire(value: str | None) -> None:
            with contextlib.suppress(Exception):  # a broken callback must not end the watch
                on_change(value)

        def loop() -> None:
            last = first
            if last is None:
                fire(None)
                return
            while not stop.wait(WATCH_INTERVAL):
                try:
                    now = look()
                except StateError:
                    now = None
                if now is None:
                    fire(None)
                    return
                if now != last:
                    last = now
                    fire(now[0] or "")  # property-set:netvm names the new value

        thread = threading.Thread(target=loop, name=f"sim-watch-{name}", daemon=True)
        thread.start()

        def stop_watching() -> None:
            stop.set()
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        return stop_watching


def _unused_disp_name(qubes: Mapping[str, Any]) -> str:
    for _ in range(64):  # the common case: a random id is free
        name = f"disp{_random_below(9999) + 1}"
        if name not in qubes:
            return name
    free = [n for n in range(1, 10000) if f"disp{n}" not in qubes]
    if not free:
        raise BackendError("no free disposable id")
    return f"disp{free[_random_below(len(free))]}"


def _random_below(n: int) -> int:
    # os.urandom rather than secrets/random: cheaper to import in every service
    # start, and the id needs no statistical quality.
    return int.from_bytes(os.urandom(4), "little") % n
