"""Admin API calls per open, counted at the qubesd socket with the real
library (docs/DEVELOPING.md, "Benchmarks": the call table is generated from
these lists), and the same calls made by
SimBackend, so that the simulation's budget means the same thing."""

from __future__ import annotations

import pytest

from tests.dom0.conftest import Broker
from tests.dom0.test_preloads import DVM, PROFILES
from whonix_open.contract import Exit

# docs/DEVELOPING.md's call table, in order: (method, destination) per step.
TOR = [
    ("admin.vm.property.GetAll", "caller"),            # class (loop guard), default_dispvm
    ("admin.vm.property.GetAll", DVM),                 # template_for_dispvms, netvm, label
    ("admin.vm.feature.CheckWithTemplate", DVM),       # whonix-ws
    ("admin.vm.feature.CheckWithTemplate", "sys-whonix"),  # whonix-gw
    ("admin.vm.CreateDisposable", DVM),
    ("admin.vm.tag.Set", "disp"),                      # contained (policy)
    ("admin.vm.feature.Set", "disp"),                  # session marker
    ("admin.vm.property.Set", "disp"),                 # default_dispvm none
    ("admin.Events", "disp"),                          # netvm watchdog
    ("admin.vm.property.GetAll", "disp"),              # read back, running?
    ("admin.vm.Start", "disp"),                        # only if it is not preloaded
    ("admin.vm.Kill", "disp"),
]
OFFLINE = [
    *TOR[:3],
    ("admin.vm.Create.DispVM", "dom0"),
    ("admin.vm.property.Set", "disp"),                 # auto_cleanup True
    ("admin.vm.tag.Set", "disp"),
    ("admin.vm.feature.Set", "disp"),                  # the marker: all marks set
    ("admin.vm.property.Set", "disp"),                 # netvm none
    ("admin.vm.property.Set", "disp"),                 # default_dispvm none
    *TOR[8:],
]
# a preload runs already: no Start, but is its netvm change still deferred?
TOR_PRELOAD = [*TOR[:10], ("admin.vm.feature.Get", "disp"), TOR[11]]


# a preload runs already: no Start, but is its netvm change still deferred?
TOR_PRELOAD = [*TOR[:10], ("admin.vm.feature.Get", "disp"), TOR[11]]


def _shape(calls, caller: str, disp: str) -> list[tuple[str, str]]:
    names = {caller: "caller", disp: "disp"}
    return [(m, names.get(d, d)) for m, d, _ in calls]


@pytest.mark.parametrize("profile, preloads, expected, budget", [
    ("tor", 0, TOR, 14),
    ("tor", 2, TOR_PRELOAD, 12),
    ("offline", 0, OFFLINE, 14),
    ("offline", 2, OFFLINE, 14),
])
def test_calls_per_open(broker, sim, tmp_path, profile, preloads, expected, budget):
    sim.set_feature("dom0", "preload-dispvm-delay", "3600")
    sim.set_feature(DVM, "preload-dispvm-max", str(preloads))
    sim.settle()
    r = broker.open_file(arg=PROFILES[profile])
    assert r.code == Exit.OK, r.err
    (service,) = sim.services()
    real = list(broker.qubesd.calls)
    assert _shape(real, "anon-whonix", service["qube"]) == expected
    assert len(real) <= budget
    # SimBackend, in another simulated Qubes, makes the very same calls
    other = type(sim).create(tmp_path / "other")
    other.set_feature("dom0", "preload-dispvm-delay", "3600")
    other.set_feature(DVM, "preload-dispvm-max", str(preloads))
    other.settle()
    r = Broker(other, tmp_path).open_file(arg=PROFILES[profile])
    assert r.code == Exit.OK, r.err
    (service,) = other.services()
    simulated = [(c["method"], c["dest"], c["arg"]) for c in other.calls()]
    assert _shape(simulated, "anon-whonix", service["qube"]) == expected
