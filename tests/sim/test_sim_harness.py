"""The harness API and the `python -m whonix_open.sim` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from whonix_open.sim.harness import SimQubes
from whonix_open.sim.scenario import ScenarioError
from whonix_open.sim.state import SimState


def sim_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whonix_open.sim", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_cli_init_and_show(tmp_path: Path) -> None:
    d = tmp_path / "q"
    r = sim_cli("init", "--dir", str(d), "--scenario", "preload")
    assert r.returncode == 0, r.stderr
    assert "sys-whonix" in r.stdout
    r = sim_cli("show", "--dir", str(d), "--json")
    state = json.loads(r.stdout)
    dvm = state["qubes"]["whonix-workstation-18-dvm"]
    assert len(dvm["features"]["preload-dispvm"].split()) == 3  # filled when it starts
    assert state["qubes"]["anon-whonix"]["default_dispvm"] == "whonix-workstation-18-dvm"
    assert "default" in sim_cli("scenarios").stdout.split()


def test_cli_reports_bad_scenarios_and_missing_state(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[qubes.dom0]\nklass = "AdminVM"\ncolour = "red"\n')
    r = sim_cli("init", "--dir", str(tmp_path / "q"), "--scenario", str(bad))
    assert r.returncode == 2 and "unknown key 'colour'" in r.stderr
    r = sim_cli("show", "--dir", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no simulated Qubes" in r.stderr


def test_create_from_data_and_env(tmp_path: Path) -> None:
    sim = SimQubes.create(tmp_path / "q", {"qubes": {"dom0": {"klass": "AdminVM"}}})
    assert list(sim.qubes()) == ["dom0"]
    env = sim.env("anon-whonix")
    assert env["WHONIX_OPEN_BACKEND"] == "sim"
    assert env["WHONIX_OPEN_SIM_DIR"] == str(sim.dir)
    assert env["WHONIX_OPEN_SIM_CALLER"] == "anon-whonix"
    assert env["WHONIX_OPEN_PYTHON"] == sys.executable
    assert "WHONIX_OPEN_SIM_CALLER" not in sim.env()


def test_create_replaces_old_state(sim: SimQubes) -> None:
    sim.set_fault("create_fails", True)
    again = SimQubes.create(sim.dir)
    assert again.faults()["create_fails"] is False
    assert again.calls() == []


def test_set_fault_validates_and_resets(sim: SimQubes) -> None:
    with pytest.raises(ScenarioError):
        sim.set_fault("disposable_behaviour", "dance")
    with pytest.raises(ScenarioError):
        sim.set_fault("no_such_knob", True)
    sim.set_fault("disposable_behaviour", "noop")
    assert sim.faults()["disposable_behaviour"] == "noop"
    sim.set_fault("disposable_behaviour", None)
    assert sim.faults()["disposable_behaviour"] == "edit"
    sim.set_fault("netvm_change_to", "sys-net")
    sim.set_fault("netvm_change_to", None)
    assert "netvm_change_to" not in sim.faults()


def test_set_property_validates_against_the_whole_state(sim: SimQubes) -> None:
    sim.set_property("whonix-workstation-18-dvm", "netvm", "sys-firewall")
    assert sim.qube("whonix-workstation-18-dvm")["netvm"] == "sys-firewall"
    assert sim.qube("whonix-workstation-18-dvm")["netvm_set_count"] == 1
    sim.set_property("whonix-workstation-18-dvm", "netvm", None)
    assert sim.qube("whonix-workstation-18-dvm")["netvm"] is None
    with pytest.raises(ScenarioError, match="does not provide network"):
        sim.set_property("anon-whonix", "netvm", "vault")
    with pytest.raises(ScenarioError, match="unknown property"):
        sim.set_property("anon-whonix", "colour", "red")
    with pytest.raises(KeyError):
        sim.set_property("ghost", "netvm", None)
    assert sim.qube("anon-whonix")["netvm"] == "sys-whonix"


def test_set_feature(sim: SimQubes) -> None:
    sim.set_feature("sys-whonix", "whonix-default-gw", "sys-whonix")
    assert sim.qube("sys-whonix")["features"]["whonix-default-gw"] == "sys-whonix"
    sim.set_feature("whonix-gateway-18", "whonix-gw", None)
    assert "whonix-gw" not in sim.qube("whonix-gateway-18")["features"]


def test_wait_until(sim: SimQubes) -> None:
    assert sim.wait_until(lambda s: s.qube("dom0"))["klass"] == "AdminVM"
    with pytest.raises(TimeoutError):
        sim.wait_until(lambda s: s.disposables(), timeout=0.1)


def test_transaction_is_dropped_when_the_block_raises(sim: SimQubes) -> None:
    state = SimState(sim.dir)
    with pytest.raises(RuntimeError), state.transaction() as st:
        st["qubes"].clear()
        raise RuntimeError
    assert "dom0" in sim.qubes()


def test_add_and_remove_qube(sim: SimQubes) -> None:
    sim.add_qube("disp77", klass="DispVM", template="default-dvm", netvm="sys-firewall",
                 auto_cleanup=True, power_state="Running")
    q = sim.qube("disp77")
    assert (q["klass"], q["default_dispvm"], q["netvm"]) == \
        ("DispVM", "default-dvm", "sys-firewall")
    assert sim.disposables() == ["disp77"]
    with pytest.raises(ScenarioError, match="already exists"):
        sim.add_qube("disp77", klass="TemplateVM")
    with pytest.raises(ScenarioError, match="not template_for_dispvms"):
        sim.add_qube("disp78", klass="DispVM", template="personal")
    sim.remove_qube("disp77")
    assert sim.disposables() == []
    with pytest.raises(ScenarioError, match="no qube 'debian-13'"):
        sim.remove_qube("debian-13")  # still the template of others
    assert "debian-13" in sim.qubes()
