"""Scenario files: the shipped ones load, and bad ones are refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whonix_open.sim import scenario
from whonix_open.sim.scenario import ScenarioError, load, shipped, validate

MINIMAL = {"qubes": {"dom0": {"klass": "AdminVM"},
                     "tpl": {"klass": "TemplateVM"},
                     "net": {"klass": "AppVM", "template": "tpl", "provides_network": True}}}


def with_qube(name: str, **fields) -> dict:
    data = json.loads(json.dumps(MINIMAL))
    data["qubes"][name] = fields
    return data


def test_default_models_r43_with_whonix_18() -> None:
    qubes = load("default")["qubes"]
    assert qubes["dom0"]["klass"] == "AdminVM"
    assert qubes["dom0"]["power_state"] == "Running"
    assert qubes["whonix-gateway-18"]["features"]["whonix-gw"] == "1"
    assert qubes["whonix-workstation-18"]["features"]["whonix-ws"] == "1"
    assert "whonix-updatevm" in qubes["whonix-workstation-18"]["tags"]
    gw = qubes["sys-whonix"]
    assert (gw["template"], gw["netvm"], gw["provides_network"]) == \
        ("whonix-gateway-18", "sys-firewall", True)
    assert "anon-gateway" in gw["tags"]
    ws = qubes["anon-whonix"]
    assert (ws["netvm"], ws["default_dispvm"]) == ("sys-whonix", "whonix-workstation-18-dvm")
    dvm = qubes["whonix-workstation-18-dvm"]
    assert dvm["template_for_dispvms"] and dvm["netvm"] == "sys-whonix"
    assert "anon-vm" in dvm["tags"]
    # Markers live on the TemplateVM only (inherited), as upstream does it.
    assert "whonix-ws" not in dvm["features"]
    assert qubes["personal"]["default_dispvm"] == "default-dvm"
    assert qubes["default-dvm"]["netvm"] == "sys-firewall"
    assert qubes["vault"]["netvm"] is None


@pytest.mark.parametrize("name", shipped())
def test_every_shipped_scenario_loads(name: str) -> None:
    data = load(name)
    assert "dom0" in data["qubes"]
    assert set(data["faults"]) <= set(scenario.FAULTS)


def test_extends_overrides_fields_and_faults() -> None:
    data = load("gateway-not-whonix")
    assert data["qubes"]["sys-whonix"]["template"] == "debian-13"
    assert data["qubes"]["sys-whonix"]["tags"] == ["audiovm-dom0", "guivm-dom0"]  # qubesd's
    assert data["qubes"]["sys-whonix"]["netvm"] == "sys-firewall"  # kept from the base
    assert load("preload")["qubes"]["whonix-workstation-18-dvm"]["features"][
        "preload-dispvm-max"] == "3"
    two = load("two-workstation-versions")["qubes"]
    assert two["anon-whonix"]["default_dispvm"] is None
    assert two["whonix-workstation-17"]["features"]["os-version"] == "17"


def test_extends_a_relative_file_and_remove_qubes(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(json.dumps(MINIMAL))
    (tmp_path / "child.toml").write_text(
        'extends = "base.json"\nremove_qubes = ["net"]\n'
        '[qubes.app]\nklass = "AppVM"\ntemplate = "tpl"\n')
    qubes = load(tmp_path / "child.toml")["qubes"]
    assert set(qubes) == {"dom0", "tpl", "app"}


def test_extends_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ScenarioError, match="loops"):
        load(tmp_path / "a.toml")


def test_json_scenario(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**MINIMAL, "faults": {"start_fails": True}}))
    data = load(path)
    assert data["faults"]["start_fails"] is True
    assert data["faults"]["disposable_behaviour"] == "edit"  # defaults filled in


def test_feature_values_become_strings() -> None:
    data = validate(with_qube("t2", klass="TemplateVM",
                              features={"a": True, "b": False, "c": 18, "d": "x"}))
    assert data["qubes"]["t2"]["features"] == {"a": "1", "b": "", "c": "18", "d": "x"}


def test_disposable_in_scenario_defaults_to_its_template_as_default_dispvm() -> None:
    data = with_qube("dvm", klass="AppVM", template="tpl", template_for_dispvms=True)
    data["qubes"]["disp1"] = {"klass": "DispVM", "template": "dvm", "auto_cleanup": True}
    assert validate(data)["qubes"]["disp1"]["default_dispvm"] == "dvm"


@pytest.mark.parametrize(("data", "message"), [
    ({**MINIMAL, "colour": 1}, "unknown top-level key 'colour'"),
    (with_qube("a", klass="AppVM", template="tpl", colour="red"), r"qubes\.a: unknown key"),
    (with_qube("a", klass="AppVM", template="tpl", qrexec_timeout="60"),
     r"qubes\.a\.qrexec_timeout: expected integer, got str"),
    (with_qube("a", klass="AppVM", template="tpl", qrexec_timeout=True),
     "expected integer, got bool"),
    (with_qube("a", klass="AppVM", template="tpl", qrexec_timeout=0), "must be positive"),
    (with_qube("a", klass="AppVM", template="tpl", provides_network="yes"),
     "expected boolean"),
    (with_qube("a", klass="HVM"), "'HVM' is not one of"),
    (with_qube("a", template="tpl"), "klass is missing"),
    (with_qube("a", klass="AppVM"), "needs a template"),
    (with_qube("a", klass="TemplateVM", template="tpl"), "has no template"),
    (with_qube("a", klass="AppVM", template="nope"), "no qube 'nope'"),
    (with_qube("a", klass="AppVM", template="net"), "not a TemplateVM"),
    (with_qube("a", klass="AppVM", template="tpl", netvm="tpl"), "does not provide network"),
    (with_qube("a", klass="AppVM", template="tpl", netvm="ghost"), "no qube 'ghost'"),
    (with_qube("a", klass="AppVM", template="tpl", default_dispvm="net"),
     "not template_for_dispvms"),
    (with_qube("a", klass="AppVM", template="tpl", auto_cleanup=True), "only a DispVM"),
    (with_qube("a", klass="TemplateVM", template_for_dispvms=True), "only an AppVM"),
    (with_qube("a", klass="AppVM", template="tpl", power_state="Dancing"), "power_state"),
    (with_qube("a", klass="AppVM", template="tpl", tags=["", "x"]), "non-empty strings"),
    (with_qube("a", klass="AppVM", template="tpl", features={"k": 1.5}), "feature values"),
    (with_qube("bad name!", klass="TemplateVM"), "not a valid qube name"),
    (with_qube("root", klass="AdminVM"), "exactly one AdminVM"),
    ({"qubes": {"tpl": {"klass": "TemplateVM"}}}, "exactly one AdminVM"),
    ({**MINIMAL, "faults": {"explode": True}}, "unknown fault 'explode'"),
    ({**MINIMAL, "faults": {"start_fails": "yes"}}, r"faults\.start_fails: expected boolean"),
    ({**MINIMAL, "faults": {"disposable_behaviour": "dance"}}, "is not one of"),
    ({**MINIMAL, "faults": {"policy_deny": "whonix.X"}}, "expected list"),
    ({**MINIMAL, "faults": {"policy_deny": [3]}}, "list of service or method names"),
    ({**MINIMAL, "remove_qubes": ["ghost"]}, "no qube 'ghost' to remove"),
    ({"qubes": []}, "table of tables"),
])
def test_invalid_scenarios_are_refused_clearly(data: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        validate(data, "test")


def test_parse_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[qubes.dom0\nklass = 1\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: does not parse"):
        load(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load(tmp_path / "missing.toml")
