"""profiles.toml: strict validation, never a fallback to a weaker setting."""

import pytest

from whonix_open.dom0.config import ConfigError, Limits, load_config, parse_config


def test_builtins_without_any_file(tmp_path):
    cfg = load_config({"WHONIX_OPEN_CONFIG": str(tmp_path / "absent.toml")})
    assert sorted(cfg.profiles) == ["offline", "tor"]
    assert cfg.profile(None).name == "tor"
    assert cfg.profile("offline").offline
    assert cfg.profile("nope") is None
    assert cfg.limits == Limits(per_qube=3, total=10, max_session_minutes=480,
                                caller_wait_seconds=30)


def test_full_config():
    cfg = parse_config({
        "default_profile": "offline",
        "limits": {"per_qube": 2, "total": 5, "max_session_minutes": 60,
                   "caller_wait_seconds": 5},
        "profiles": {
            "tor": {"gateway": "sys-whonix"},
            "tor-2": {"network": "tor", "gateway": "sys-whonix-2", "dvm": "ws-dvm"},
            "air": {"network": "offline", "dvm": "ws-dvm"},
        },
    })
    assert cfg.profile(None).name == "offline"
    assert cfg.profile("tor").gateway == "sys-whonix"
    assert cfg.profile("tor-2").dvm == "ws-dvm"
    assert cfg.profile("air").offline
    assert cfg.limits == Limits(2, 5, 60, 5)


@pytest.mark.parametrize("data, where", [
    ({"defaults": "tor"}, "unknown key"),
    ({"default_profile": "nope"}, "default_profile"),
    ({"default_profile": 3}, "default_profile"),
    ({"profiles": {"x": {"network": "clearnet"}}}, "profiles.x.network"),
    ({"profiles": {"x": {}}}, "profiles.x.network"),
    ({"profiles": {"x": {"network": "tor", "netvm": "sys-net"}}}, "unknown key"),
    ({"profiles": {"X": {"network": "tor"}}}, "profile name"),
    ({"profiles": {"x": {"network": "tor", "gateway": "bad name"}}}, "gateway"),
    ({"profiles": {"x": {"network": "tor", "dvm": 7}}}, "dvm"),
    ({"profiles": {"x": {"network": "offline", "gateway": "sys-whonix"}}}, "offline"),
    ({"profiles": {"offline": {"network": "tor"}}}, "cannot be changed"),
    ({"profiles": {"tor": {"network": "offline"}}}, "cannot be changed"),
    ({"profiles": {"x": "tor"}}, "table"),
    ({"profiles": []}, "table"),
    ({"limits": {"per_qube": 0}}, "per_qube"),
    ({"limits": {"total": True}}, "total"),
    ({"limits": {"total": "10"}}, "total"),
    ({"limits": {"max": 1}}, "unknown key"),
    ({"limits": {"per_qube": 5, "total": 10}}, "more than twice per_qube"),
    ({"limits": {"per_qube": 1, "total": 2}}, "total"),
    ({"limits": {"max_session_minutes": 0}}, "max_session_minutes"),
    ({"limits": {"max_session_minutes": 10081}}, "max_session_minutes"),
    ({"limits": {"caller_wait_seconds": 1.5}}, "caller_wait_seconds"),
    ({"limits": {"caller_wait_seconds": 301}}, "caller_wait_seconds"),
])
def test_invalid_configs(data, where):
    with pytest.raises(ConfigError, match=where):
        parse_config(data)


def test_unparsable_file(tmp_path):
    p = tmp_path / "profiles.toml"
    p.write_text("[profiles.tor\n")
    with pytest.raises(ConfigError, match="cannot be read or parsed"):
        load_config({"WHONIX_OPEN_CONFIG": str(p)})
