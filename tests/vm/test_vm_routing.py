"""The routing check: dom0's answer, the local fallback when dom0 does not
answer, the warnings, require_whonix_gateway, and --status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import DOM0_STATUS_WHONIX
from whonix_open.vm import routing

NOT_WHONIX = dict(
    DOM0_STATUS_WHONIX,
    qube="work",
    netvm="sys-firewall",
    netvm_is_whonix_gateway=False,
    is_whonix_workstation=False,
)


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "a.pdf"
    path.write_text("pdf")
    return path


def test_behind_a_whonix_gateway_no_warning(world, doc):
    result = world.run(str(doc))
    assert result.returncode == 0
    assert "warning" not in result.stderr
    assert [n[3] for n in world.notifications()] == ["whonix-open"]  # just the result


def test_not_behind_a_whonix_gateway_warns_and_still_opens(world, doc):
    world.set(status_json=NOT_WHONIX)
    result = world.run(str(doc))
    assert result.returncode == 0
    text = " ".join(result.stderr.split())
    assert "NOT behind a Whonix-Gateway (its netvm is sys-firewall)" in text
    assert "its own traffic" in text and "not Tor-routed" in text
    assert "disposable the file opens in is still Tor-routed (or offline)" in text
    assert "dom0 enforces" in text
    assert len(world.open_calls()) == 1
    warnings = [n for n in world.notifications() if n[3] == "whonix-open: warning"]
    assert len(warnings) == 1 and "sys-firewall" in warnings[0][4]


def test_qube_without_network_is_not_warned_about(world, doc):
    world.set(status_json=dict(NOT_WHONIX, netvm=None))
    result = world.run(str(doc))
    assert result.returncode == 0 and "warning" not in result.stderr


def test_disposable_template_warning(world, doc):
    world.set(status_json=dict(DOM0_STATUS_WHONIX, is_disposable_template=True))
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0
    assert "disposable template" in result.stderr
    assert "every disposable based on it" in result.stderr


def test_require_whonix_gateway_turns_the_warning_into_a_refusal(world, doc):
    config = world.write_config("require_whonix_gateway = true\n")
    world.set(status_json=NOT_WHONIX)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 3
    assert "require_whonix_gateway" in result.stderr and str(config) in result.stderr
    assert world.open_calls() == []


def test_require_whonix_gateway_behind_a_gateway_opens(world, doc):
    world.write_config("require_whonix_gateway = true\n")
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert len(world.open_calls()) == 1


@pytest.mark.parametrize(
    "answer",
    [
        {"status_code": 126},  # policy denied
        {"status_code": 127},  # service not installed
        {"status_code": 0, "status_raw": "not json"},
        {"status_code": 0, "status_json": {"version": 2}},
        {"status_code": 0, "status_json": dict(DOM0_STATUS_WHONIX, netvm=5)},
    ],
)
def test_no_dom0_answer_falls_back_to_local_facts(world, doc, answer):
    world.control.pop("status_json", None)
    world.set(**answer)
    world.mark_whonix_workstation()
    world.install_qubesdb(
        {"/name": "anon-whonix", "/type": "AppVM", "/qubes-gateway": "10.137.0.1"}
    )
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert "UNVERIFIED" in result.stderr
    assert "NOT behind" not in result.stderr  # a Whonix-Workstation with a gateway
    assert len(world.open_calls()) == 1


@pytest.mark.parametrize("answer", [{"status_code": 126}, {"status_code": 0,
                                                          "status_raw": "not json"}])
@pytest.mark.parametrize("what", ["FILE", "URL"])
def test_require_whonix_gateway_needs_dom0s_verified_answer(world, doc, answer, what):
    """A Whonix-Workstation on some netvm with a gateway: its local facts look
    fine, but only dom0 knows the netvm is a Whonix-Gateway (it used to pass
    with the netvm switched to sys-firewall)."""
    config = world.write_config("require_whonix_gateway = true\n")
    world.control.pop("status_json", None)
    world.set(**answer)
    world.mark_whonix_workstation()
    world.install_qubesdb(
        {"/name": "anon-whonix", "/type": "AppVM", "/qubes-gateway": "10.137.0.1"}
    )
    arg = str(doc) if what == "FILE" else "https://example.org/"
    result = world.run("--no-notify", arg)
    assert result.returncode == 3, result.stderr
    text = " ".join(result.stderr.split())
    assert f"require_whonix_gateway is set in {config}" in text
    assert "dom0 did not confirm that this qube is behind a Whonix-Gateway" in text
    assert [c for c in world.calls() if "RoutingStatus" not in c["argv"][1]] == []


def test_denied_fallback_in_a_non_whonix_qube_warns(world, doc):
    world.set(status_code=126)
    world.install_qubesdb({"/name": "work", "/type": "AppVM", "/qubes-gateway": "10.137.0.1"})
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0
    text = " ".join(result.stderr.split())
    assert "qrexec policy denied whonix.RoutingStatus" in text
    assert "UNVERIFIED" in text and "NOT behind a Whonix-Gateway" in text


def test_denied_fallback_with_require_refuses(world, doc):
    world.write_config("require_whonix_gateway = true\n")
    world.set(status_code=126)
    world.install_qubesdb({"/name": "work", "/type": "AppVM", "/qubes-gateway": "10.137.0.1"})
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 3
    assert world.open_calls() == []


def test_fallback_without_qubesdb_cannot_tell(world, doc):
    world.set(status_code=126)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0
    assert "could not determine whether this qube is behind a Whonix-Gateway" in " ".join(
        result.stderr.split()
    )


def test_local_disposable_template_is_judged_by_name(world):
    world.set(status_code=126)
    world.mark_whonix_workstation()
    world.install_qubesdb(
        {"/name": "whonix-workstation-18-dvm", "/type": "AppVM", "/qubes-gateway": "10.1.1.1"}
    )
    result = world.run("--status", "--json")
    data = json.loads(result.stdout)
    assert data["is_disposable_template"] is True and data["verified"] is False
    assert any("judged by its name" in w for w in data["warnings"])


def test_status_text(world):
    result = world.run("--status")
    assert result.returncode == 0
    assert "behind a Whonix-Gateway:  yes" in result.stdout
    assert "profiles:                 offline, tor (default: tor)" in result.stdout
    assert "dom0 (verified)" in result.stdout
    assert [c["argv"] for c in world.calls()] == [["dom0", "whonix.RoutingStatus"]]


def test_status_json_from_dom0(world):
    world.set(status_json=NOT_WHONIX)
    result = world.run("--status", "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["verified"] is True and data["source"] == "dom0"
    assert data["netvm"] == "sys-firewall" and data["behind_whonix_gateway"] is False
    assert data["profiles"] == ["offline", "tor"]
    assert len(data["warnings"]) == 1


def test_status_json_local(world):
    world.set(status_code=126)
    world.install_qubesdb({"/name": "disp123", "/type": "DispVM"})
    data = json.loads(world.run("--status", "--json").stdout)
    assert data["source"] == "local" and data["verified"] is False
    assert data["qube"] == "disp123" and data["is_disposable"] is True
    assert data["has_network"] is False and data["warnings"][0].startswith("could not ask")


def test_routing_module_validation():
    with pytest.raises(ValueError):
        routing._from_dom0(dict(DOM0_STATUS_WHONIX, is_disposable="no"))
    with pytest.raises(ValueError):
        routing._from_dom0([1])
    ok = routing._from_dom0(DOM0_STATUS_WHONIX)
    assert ok.behind_gateway_for_sure() and ok.warnings() == []
