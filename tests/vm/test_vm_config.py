"""The per-user config file (vm/config.py)."""

from __future__ import annotations

import pytest

from whonix_open.vm import config


def test_defaults_without_a_file(tmp_path):
    assert config.load(str(tmp_path / "absent.toml")) == config.UserConfig()


def test_all_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'default_profile = "offline"\nview_only = true\nrequire_whonix_gateway = true\n'
    )
    got = config.load(str(path))
    assert got == config.UserConfig("offline", True, True, None, str(path))
    path.write_text('max_reply_size = "8G"\n')
    assert config.load(str(path)).max_reply_size == 8 << 30


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("colour = 1\n", "unknown key(s) colour"),
        ('view_only = "yes"\n', "view_only must be a bool, not str"),
        ("require_whonix_gateway = 1\n", "must be a bool, not int"),
        ("default_profile = 3\n", "default_profile must be a str"),
        ('default_profile = "Tor"\n', "is not a profile name"),
        ("view_only = \n", "not valid TOML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, error):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(str(path))
    assert error in str(caught.value) and str(path) in str(caught.value)


def test_bad_config_stops_the_cli_before_any_qrexec_call(world, tmp_path):
    world.write_config("view_only = 1\n")
    doc = tmp_path / "x.txt"
    doc.write_text("x")
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 2
    assert "config:" in result.stderr and "view_only must be a bool" in result.stderr
    assert world.calls() == []


def test_system_wide_config_in_xdg_config_dirs(world, tmp_path):
    system = tmp_path / "world" / "etc-xdg" / "whonix-open" / "config.toml"
    system.parent.mkdir(parents=True)
    system.write_text("view_only = true\n")
    doc = tmp_path / "x.txt"
    doc.write_text("x")
    assert world.run("--no-notify", str(doc)).returncode == 0
    assert world.open_calls()[0]["argv"][1] == "whonix.ViewInDisposable+tor"
    world.write_config("view_only = false\n")  # the user's own file wins
    assert world.run("--no-notify", str(doc)).returncode == 0
    assert world.open_calls()[1]["argv"][1] == "whonix.OpenInDisposable+tor"
