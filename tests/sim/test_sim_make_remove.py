"""The simulated qubesd making and removing qubes as qubes-core-admin does
(docs/QUBES-FACTS.md, "Making and removing qubes"): admin.vm.Create.AppVM,
admin.vm.Remove's in-use rule, admin.vm.feature.Remove with preloads,
preload-dispvm-max's checks, and R4.2 (no preloads, no bootmode)."""

from __future__ import annotations

import pytest

from whonix_open.dom0.backend import BackendError
from whonix_open.sim import qubesd
from whonix_open.sim.backend import SimBackend
from whonix_open.sim.harness import SimQubes

TPL, DVM = "whonix-workstation-18", "whonix-workstation-18-dvm"


def error_class(fn, *args) -> str:
    with pytest.raises(BackendError) as e:
        fn(*args)
    return getattr(e.value, "qubesd_class", type(e.value).__name__)


def test_create_appvm_makes_a_halted_appvm_with_defaults(sim, backend):
    backend.create_appvm(TPL, "new-dvm", "red")
    info = backend.info("new-dvm")
    assert (info.klass, info.template, info.label, info.xid) == ("AppVM", TPL, "red", -1)
    assert info.netvm is None and not info.template_for_dispvms  # no global default_netvm here
    assert backend.tags("new-dvm") == {"created-by-dom0", "guivm-dom0", "audiovm-dom0"}
    assert [c["method"] for c in sim.calls()][-3:] == ["admin.vm.Create.AppVM",
                                                       "admin.vm.property.GetAll",
                                                       "admin.vm.tag.List"]


@pytest.mark.parametrize("template, name, label, qubesd_class", [
    (TPL, "sys-whonix", "red", "QubesValueError"),        # taken (R4.3: "already exists")
    (TPL, "1bad", "red", "QubesValueError"),              # validate_name
    (TPL, "x" * 32, "red", "QubesValueError"),
    (TPL, "name-dm", "red", "QubesValueError"),
    (TPL, "ok", "pink", "QubesLabelNotFoundError"),
    ("nope", "ok", "red", "QubesVMNotFoundError"),
    ("sys-whonix", "ok", "red", "QubesValueError"),       # an AppVM is no template
])
def test_create_appvm_refusals(sim, backend, template, name, label, qubesd_class):
    before = sim.qubes()
    assert error_class(backend.create_appvm, template, name, label) == qubesd_class
    assert sim.qubes() == before


def test_remove_counts_only_explicit_references_and_not_preloads(sim, backend):
    backend.create_appvm(TPL, "new-dvm", "red")
    backend.set_property("new-dvm", "template_for_dispvms", "True")
    backend.set_property("new-dvm", "default_dispvm", "new-dvm")  # itself: allowed
    backend.set_feature("new-dvm", "preload-dispvm-max", "1")
    sim.settle()
    (preload,) = sim.preloads("new-dvm")
    sim.set_property("anon-whonix", "default_dispvm", "new-dvm")
    assert error_class(backend.remove, "new-dvm") == "QubesVMInUseError"
    sim.set_property("anon-whonix", "default_dispvm", DVM)
    assert error_class(backend.remove, "sys-whonix") == "QubesVMNotHaltedError"
    backend.remove("new-dvm")  # its preload's template does not count (R4.3)
    assert "new-dvm" not in sim.qubes() and preload in sim.qubes()


def test_removing_preload_dispvm_max_cleans_the_preloads_up(sim, backend):
    backend.set_feature(DVM, "preload-dispvm-max", "2")
    sim.settle()
    ready = sim.preloads(DVM)
    assert len(ready) == 2
    backend.remove_feature(DVM, "preload-dispvm-max")
    assert sim.preloads(DVM) == [] and not set(ready) & set(sim.qubes())
    assert error_class(backend.remove_feature, DVM, "preload-dispvm-max") == \
        "QubesFeatureNotFoundError"


def test_preload_dispvm_max_needs_qrexec_support_and_digits(sim, backend):
    assert error_class(backend.set_feature, DVM, "preload-dispvm-max", "two") == \
        "QubesValueError"
    sim.set_feature(TPL, "supported-rpc.qubes.WaitForRunningSystem", None)
    assert error_class(backend.set_feature, DVM, "preload-dispvm-max", "2") == \
        "QubesValueError"
    assert "preload-dispvm-max" not in sim.qubes()[DVM]["features"]


def test_r42_has_no_preloads_and_no_bootmode(tmp_path):
    sim = SimQubes.create(tmp_path / "sim", "r4.2")
    backend = SimBackend(sim.dir)
    assert "bootmode" not in backend.property_names(DVM)
    backend.set_feature(DVM, "preload-dispvm-max", "anything")  # an inert feature
    sim.settle()
    assert sim.preloads(DVM) == []
    with pytest.raises(qubesd.ProtocolError), sim.state.transaction() as st:
        qubesd.call(st, qubesd.Call("admin.vm.CreateDisposable", "dom0", DVM, "preload"))
    r43 = SimBackend(SimQubes.create(tmp_path / "r43").dir)
    assert "bootmode" in r43.property_names(DVM)
