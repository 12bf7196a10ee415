"""The simulated Qubes as a source for whonix-open-admin (tests and demo only).

The inventory is read from the simulation's state in one go (what the real
source reads through qubesadmin, qube by qube); everything the admin command
does to qubes goes through SimBackend, as the broker's calls do."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from whonix_open.dom0.admin.inventory import FEATURES, Qube
from whonix_open.dom0.backend import BackendError, QubesdUnreachable
from whonix_open.dom0.resolve import GW_FEATURE, WS_FEATURE, feature_true
from whonix_open.sim.backend import SimBackend
from whonix_open.sim.state import SimState, StateError


def _with_template(qubes: Mapping[str, Any], name: str, key: str) -> str | None:
    q = qubes[name]
    while True:
        if key in q["features"]:
            return q["features"][key]
        if not q["template"]:
            return None
        q = qubes[q["template"]]


class SimSource:
    def __init__(self, backend: SimBackend, state: SimState) -> None:
        self.backend = backend
        self._state = state

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimSource:
        return cls(SimBackend.from_env(env), SimState.from_env(env))

    def global_default_dispvm(self) -> str | None:
        return None  # the simulation has no global properties

    def inventory(self, only: str | None = None) -> dict[str, Qube]:
        try:
            st = self._state.read()
        except StateError as e:
            raise QubesdUnreachable(str(e)) from None
        if st["faults"].get("qubesd_unreachable"):
            raise BackendError("qubesd is not reachable (simulated)")
        qubes = st["qubes"]
        result = {}
        for name, q in qubes.items():
            fake = q.get("reads_back_as", {})
            klass = fake.get("klass", q["klass"])
            if only is not None and klass != only:
                result[name] = Qube(name=name, klass=klass, power_state="?")
                continue
            result[name] = Qube(
                name=name, klass=klass,
                template=fake.get("template", q["template"]) or None,
                netvm=q["netvm"] or None, default_dispvm=q["default_dispvm"] or None,
                template_for_dispvms=q["template_for_dispvms"], auto_cleanup=q["auto_cleanup"],
                power_state=q["power_state"], tags=frozenset(q["tags"]),
                features={k: v for k, v in q["features"].items()
                          if k in FEATURES and FEATURES[k](q["klass"], q["template_for_dispvms"])},
                ws=feature_true(_with_template(qubes, name, WS_FEATURE)),
                gw=feature_true(_with_template(qubes, name, GW_FEATURE)),
                # qubesd gives every qube a uuid; the simulation derives one from the name
                uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.sim.whonix-open")))
        return result
