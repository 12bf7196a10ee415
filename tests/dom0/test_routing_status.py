"""whonix.RoutingStatus: facts about the caller's own network path."""

import json

import pytest

from whonix_open.contract import SERVICE_STATUS, Exit


def status(broker, caller, arg=""):
    r = broker.run(service=SERVICE_STATUS, caller=caller, arg=arg)
    return r, (json.loads(r.out) if r.code == 0 else None)


def test_whonix_workstation_behind_sys_whonix(broker):
    r, s = status(broker, "anon-whonix")
    assert r.code == Exit.OK, r.err
    assert s["qube"] == "anon-whonix" and s["netvm"] == "sys-whonix"
    assert s["netvm_is_whonix_gateway"] and s["is_whonix_workstation"]
    assert not s["is_disposable"] and not s["is_disposable_template"]
    assert s["profiles"] == ["offline", "tor"] and s["default_profile"] == "tor"
    assert r.out.count(b"\n") == 1  # one JSON object


def test_clearnet_qube(broker):
    _, s = status(broker, "personal")
    assert s["netvm"] == "sys-firewall"
    assert not s["netvm_is_whonix_gateway"] and not s["is_whonix_workstation"]


def test_offline_qube(broker):
    _, s = status(broker, "vault")
    assert s["netvm"] is None and not s["netvm_is_whonix_gateway"]


def test_disposable_template(broker):
    _, s = status(broker, "whonix-workstation-18-dvm")
    assert s["is_disposable_template"] and s["is_whonix_workstation"]


def test_gateway_is_judged_by_feature_not_name(broker, sim):
    sim.set_feature("whonix-gateway-18", "whonix-gw", None)
    _, s = status(broker, "anon-whonix")
    assert s["netvm"] == "sys-whonix" and not s["netvm_is_whonix_gateway"]


def test_admin_profiles_are_listed(broker):
    broker.config.write_text("default_profile = 'offline'\n"
                             "[profiles.tor-2]\nnetwork = 'tor'\ngateway = 'sys-whonix'\n")
    _, s = status(broker, "anon-whonix")
    assert s["profiles"] == ["offline", "tor", "tor-2"] and s["default_profile"] == "offline"


def test_broken_config_still_answers(broker):
    broker.config.write_text("nonsense = 1\n")
    r, s = status(broker, "anon-whonix")
    assert r.code == Exit.OK and s["config_ok"] is False and s["profiles"] == []


@pytest.mark.parametrize("arg", ["tor", "x"])
def test_an_argument_is_64(broker, sim, arg):
    r, _ = status(broker, "anon-whonix", arg=arg)
    assert r.code == Exit.BAD_REQUEST and sim.calls() == []


def test_unknown_caller_is_64(broker):
    r, _ = status(broker, "ghost")
    assert r.code == Exit.BAD_REQUEST


def test_qubesd_down_is_73(broker, sim):
    sim.set_fault("qubesd_unreachable", True)
    r, _ = status(broker, "anon-whonix")
    assert r.code == Exit.INTERNAL
