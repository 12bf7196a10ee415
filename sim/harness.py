"""A small API over one simulated Qubes, for the tests and the demo.

    sim = SimQubes.create(tmp_path / "qubes")            # the default scenario
    sim = SimQubes.create(d, scenario="preload")          # a shipped one, or a path
    env = {**os.environ, **sim.env(caller="anon-whonix")}  # for subprocesses
    sim.set_fault("disposable_behaviour", "noop")
    sim.disposables(), sim.calls(), sim.received()

Changes made here (set_fault, set_property, ...) go straight into the state;
they are not Admin API calls and are not logged as such.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from whonix_open.sim import qubesd
from whonix_open.sim import scenario as scenarios
from whonix_open.sim.backend import kill_processes
from whonix_open.sim.qrexec_client import CALLER_ENV
from whonix_open.sim.state import SIM_DIR_ENV, SimState, StateError, empty_state

BIN_DIR = Path(__file__).resolve().parent / "bin"
T = TypeVar("T")


class SimQubes:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.state = SimState(self.dir)

    @classmethod
    def create(cls, directory: str | os.PathLike[str],
               scenario: str | os.PathLike[str] | Mapping[str, Any] = "default") -> SimQubes:
        """A fresh simulated Qubes in *directory* (a scenario name, a file, or
        the scenario's data itself). Replaces any state already there."""
        if isinstance(scenario, Mapping):
            loaded = scenarios.validate(scenario, "scenario")
        else:
            loaded = scenarios.load(scenario)
        sim = cls(directory)
        sim.state.initialise(empty_state(loaded["qubes"], loaded["faults"], loaded["globals"],
                                         loaded["release"]))
        sim.settle()  # qubesd fills the preload queues when it starts
        return sim

    # --- looking -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return self.state.read()

    def qubes(self) -> dict[str, dict[str, Any]]:
        return self.state.read()["qubes"]

    def qube(self, name: str) -> dict[str, Any] | None:
        return self.qubes().get(name)

    def disposables(self) -> list[str]:
        """Names of the qubes of class DispVM that exist now."""
        return sorted(n for n, q in self.qubes().items() if q["klass"] == "DispVM")

    def calls(self) -> list[dict[str, Any]]:
        """The Admin API call log, in order: {"method", "dest", "arg", "pid"}."""
        return self.state.read()["calls"]

    def received(self) -> list[dict[str, Any]]:
        """What disposable sides received: {"qube", "caller", "name",
        "view_only", "size", "sha256", "pid", "path", "replied"}."""
        return self.state.read()["received"]

    def services(self) -> list[dict[str, Any]]:
        """run_service calls: {"qube", "service", "pid", "connect_timeout", "t"}."""
        return self.state.read()["services"]

    def faults(self) -> dict[str, Any]:
        return self.state.read()["faults"]

    def env(self, caller: str | None = None) -> dict[str, str]:
        """The variables that select this simulation (add them to os.environ).
        With *caller*, also the calling qube for the qrexec stand-in."""
        env = {"WHONIX_OPEN_BACKEND": "sim", SIM_DIR_ENV: str(self.dir),
               "WHONIX_OPEN_PYTHON": sys.executable}
        if caller is not None:
            env[CALLER_ENV] = caller
        return env

    def path_with_stand_in(self, path: str | None = None) -> str:
        """PATH with sim/bin (the qrexec-client-vm stand-in) first."""
        path = os.environ.get("PATH", "") if path is None else path
        return f"{BIN_DIR}{os.pathsep}{path}" if path else str(BIN_DIR)

    # --- changing ----------------------------------------------------------

    def set_fault(self, key: str, value: Any) -> None:
        """Set a fault knob (validated as in a scenario); None resets it."""
        with self.state.transaction() as st:
            if value is None:
                st["faults"].pop(key, None)
                default = scenarios.FAULTS.get(key, (None, None))[1]
                if default is not None:
                    st["faults"][key] = default
            else:
                st["faults"][key] = scenarios.check_fault(key, value)

    def set_property(self, qube: str, key: str, value: Any) -> None:
        """Change one property of an existing qube, as an administrator in
        dom0 would; the whole state is re-validated and nothing changes if
        the result would be invalid."""
        with self.state.transaction() as st:
            q = st["qubes"].get(qube)
            if q is None:
                raise KeyError(qube)
            if key not in scenarios.QUBE_FIELDS:
                raise scenarios.ScenarioError(f"unknown property {key!r}")
            if value is None and key in ("netvm", "default_dispvm"):
                value = ""  # the scenario spelling of "none"
            checked = scenarios.validate({"qubes": {qube: {key: value}}}, "set_property",
                                         base={"qubes": st["qubes"], "faults": {}})
            old = q.get(key)
            q[key] = checked["qubes"][qube][key]
            if key in q.get("default_props", ()):  # set now, no longer the default
                q["default_props"].remove(key)
            qubesd.admin_changed(st, qube, key, old)

    def add_qube(self, name: str, **fields: Any) -> None:
        """Add a qube described as in a scenario's [qubes.NAME] table
        (validated against the whole state; an existing name is refused)."""
        with self.state.transaction() as st:
            if name in st["qubes"]:
                raise scenarios.ScenarioError(f"add_qube: {name} already exists")
            checked = scenarios.validate({"qubes": {name: fields}}, "add_qube",
                                         base={"qubes": st["qubes"], "faults": {}})
            st["qubes"][name] = checked["qubes"][name]

    def remove_qube(self, name: str) -> None:
        """Remove a qube that nothing else uses (no Admin API call is logged)."""
        with self.state.transaction() as st:
            others = {n: q for n, q in st["qubes"].items() if n != name}
            scenarios.validate({}, "remove_qube", base={"qubes": others, "faults": {}})
            del st["qubes"][name]
            st["processes"].pop(name, None)

    def set_feature(self, qube: str, key: str, value: str | None) -> None:
        """Set (or with None, remove) one of the qube's own features."""
        with self.state.transaction() as st:
            features = st["qubes"][qube]["features"]
            if value is None:
                features.pop(key, None)
            else:
                features[key] = str(value)
            qubesd.admin_feature_set(st, qube, key)

    def settle(self) -> None:
        """Let the simulated qubesd catch up with what is due by now (refill
        preload queues) without an Admin API call."""
        with self.state.transaction() as st:
            qubesd.tick(st, time.time(), kill_processes)

    def preloads(self, dvm: str) -> list[str]:
        """The DVM template's ready preloaded disposables (feature preload-dispvm)."""
        return qubesd.preload_list(self.qubes()[dvm])

    def kill_leftovers(self) -> None:
        """SIGKILL every disposable-side process still recorded (test teardown)."""
        with contextlib.suppress(StateError), self.state.transaction() as st:
            for records in st["processes"].values():
                kill_processes(records)
            st["processes"] = {}

    def wait_until(self, predicate: Callable[[SimQubes], T], timeout: float = 10.0,
                   interval: float = 0.02) -> T:
        """Poll *predicate(self)* until it is truthy; its value. TimeoutError
        after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)
