"""Differential test of the Admin API calls `whonix-open-admin setup` and
`setup --undo` make (issue 18): the same sequences to our qubesd model and to
the REAL qubesd of this venv's release, compared as test_differential.py
compares them - making an AppVM (and its refusals), the property, feature and
tag writes on it, preload-dispvm-max's checks, admin.vm.feature.Remove and
admin.vm.Remove with its in-use rule, and the `bootmode` property that tells
R4.3 from R4.2."""

from __future__ import annotations

import pytest

from tests.realqubesd.harness import DVM, RealQubesd
from tests.realqubesd.test_differential import Step, differences, model

__all__ = ["model"]  # the fixture, shared with test_differential.py

NEW = "whonix-ws-18-offline-dvm"
CREATE = ("admin.vm.Create.AppVM", "dom0", "whonix-workstation-18",
          f"name={NEW} label=red".encode())

SEQUENCES: dict[str, list[Step]] = {
    "create": [
        CREATE,
        CREATE,  # taken
        ("admin.vm.Create.AppVM", "dom0", "whonix-workstation-18", b"name=1bad label=red"),
        ("admin.vm.Create.AppVM", "dom0", "whonix-workstation-18",
         b"name=" + b"x" * 32 + b" label=red"),
        ("admin.vm.Create.AppVM", "dom0", "whonix-workstation-18", b"name=ok label=pink"),
        ("admin.vm.Create.AppVM", "dom0", "ghost", b"name=ok label=red"),
        ("admin.vm.property.GetAll", NEW, "", b""),
        ("admin.vm.tag.List", NEW, "", b""),
        ("admin.vm.List", NEW, "", b""),
    ],
    "make it a DVM template": [
        CREATE,
        ("admin.vm.feature.Set", NEW, "whonix-open-setup", b"offline"),
        ("admin.vm.property.Set", NEW, "netvm", b""),
        ("admin.vm.property.Set", NEW, "template_for_dispvms", b"True"),
        ("admin.vm.property.Set", NEW, "default_dispvm", NEW.encode()),
        ("admin.vm.tag.Set", NEW, "anon-vm", b""),
        ("admin.vm.feature.Set", NEW, "appmenus-dispvm", b"1"),
        ("admin.vm.property.GetAll", NEW, "", b""),
        ("admin.vm.feature.CheckWithTemplate", NEW, "whonix-ws", b""),
        ("admin.vm.feature.Get", NEW, "whonix-open-setup", b""),
        ("admin.vm.property.Get", NEW, "bootmode", b""),
        ("admin.vm.property.Get", DVM, "bootmode", b""),
    ],
    "preload-dispvm-max checks": [
        ("admin.vm.feature.Set", DVM, "preload-dispvm-max", b"two"),
        ("admin.vm.feature.Get", DVM, "preload-dispvm-max", b""),
        ("admin.vm.feature.Remove", DVM, "preload-dispvm-max", b""),
        ("admin.vm.feature.Set", DVM, "preload-dispvm-max", b"0"),
        ("admin.vm.feature.Remove", DVM, "preload-dispvm-max", b""),
        ("admin.vm.feature.Get", DVM, "preload-dispvm-max", b""),
    ],
    "remove": [
        CREATE,
        ("admin.vm.property.Set", NEW, "netvm", b""),
        ("admin.vm.property.Set", NEW, "template_for_dispvms", b"True"),
        ("admin.vm.property.Set", NEW, "default_dispvm", NEW.encode()),  # itself: no user
        ("admin.vm.property.Set", "anon-whonix", "default_dispvm", NEW.encode()),
        ("admin.vm.Remove", NEW, "", b""),  # in use
        ("admin.vm.property.Set", "anon-whonix", "default_dispvm", DVM.encode()),
        ("admin.vm.Remove", NEW, "", b""),
        ("admin.vm.List", NEW, "", b""),
        ("admin.vm.Remove", "sys-whonix", "", b""),  # running
    ],
}


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_model_and_real_qubesd_answer_setups_calls_alike(real_qubesd: RealQubesd, model, name):
    assert differences(real_qubesd.socket_path, model.socket_path, SEQUENCES[name]) == []
