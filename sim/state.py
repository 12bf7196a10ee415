"""The simulated Qubes' state, shared by every process that takes part.

One JSON file, `state.json`, in the sim directory (WHONIX_OPEN_SIM_DIR). The
broker, the disposable-side processes, the qrexec stand-in and the tests all
change it, so every read-modify-write holds an exclusive `flock` on
`state.lock`, and every write replaces the file atomically (a reader without
the lock always sees a whole state, never half of one).

Layout::

    {"version": 1,
     "qubes": {name: {klass, template, netvm, default_dispvm,
                      template_for_dispvms, auto_cleanup, qrexec_timeout,
                      features{}, tags[], power_state, provides_network, ...}},
     "faults": {knob: value},
     "calls": [{"method", "dest", "arg", "pid"}, ...],   # Admin API call log
     "processes": {qube: [pid, ...]},       # disposable-side processes per qube
     "services": [{"qube", "service", "pid", "connect_timeout", "t"}, ...],
     "received": [{"qube", "caller", "name", "view_only", "size", "sha256",
                   "pid", "path", "replied"}, ...]}

This module only stores; the meaning of the fields lives in backend.py and
disposable.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SIM_DIR_ENV = "WHONIX_OPEN_SIM_DIR"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
STATE_VERSION = 1


class StateError(Exception):
    """The sim directory has no usable state (not initialised, or corrupt)."""


def empty_state(qubes: dict[str, Any], faults: dict[str, Any],
                globals_: dict[str, str] | None = None, release: str = "4.3") -> dict[str, Any]:
    """A fresh state holding these qubes, faults, qubesd globals and no history."""
    return {"version": STATE_VERSION, "qubes": qubes, "faults": faults, "calls": [],
            "processes": {}, "services": [], "received": [], "globals": globals_ or {},
            "release": release}


class SimState:
    """Access to one sim directory's state file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.path = self.dir / STATE_FILE
        self._lock_path = self.dir / LOCK_FILE

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimState:
        directory = env.get(SIM_DIR_ENV)
        if not directory:
            raise StateError(f"{SIM_DIR_ENV} is not set")
        return cls(directory)

    def read(self) -> dict[str, Any]:
        """A snapshot. No lock needed: writers replace the file atomically."""
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise StateError(f"no simulated Qubes in {self.dir} (run 'init' first)") from None
        except (OSError, ValueError) as e:
            raise StateError(f"unreadable state in {self.dir}: {e}") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StateError(f"state in {self.dir} has an unknown format")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the lock

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Yield the state for changing in place; it is written back when the
        block ends normally and dropped if the block raises."""
        with self._locked():
            data = self.read()
            yield data
            self._write(data)

    def initialise(self, data: dict[str, Any]) -> None:
        """Replace whatever is there with *data* (a whole state)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        # One temporary name is enough: only the lock holder writes.
        tmp = self.dir / (STATE_FILE + ".tmp")
        # json.dumps, not json.dump: only dumps uses the C encoder.
        text = json.dumps(data, separators=(",", ":")).encode()
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, self.path)
