"""profiles.toml [apps]: dom0's allowlist for whonix.StartAppInDisposable."""

import pytest

from whonix_open.dom0.config import BUILTIN_APPS, ConfigError, parse_config


def test_builtin_apps():
    assert parse_config({}).apps == {"torbrowser": "janondisttorbrowser",
                                     "terminal": "qubes-run-terminal"}


def test_add_replace_and_withdraw():
    cfg = parse_config({"apps": {"mail": {"desktop_id": "thunderbird"},
                                 "torbrowser": {"desktop_id": "torbrowser.org.Launcher"},
                                 "terminal": {"enabled": False}}})
    assert cfg.apps == {"mail": "thunderbird", "torbrowser": "torbrowser.org.Launcher"}
    assert BUILTIN_APPS["terminal"] == "qubes-run-terminal"  # the default is untouched


@pytest.mark.parametrize(("apps", "where"), [
    ([], "apps: must be a table"),
    ({"Mail": {"desktop_id": "x"}}, "apps.Mail: an app name"),
    ({"mail": "thunderbird"}, "apps.mail: must be a table"),
    ({"mail": {}}, "apps.mail.desktop_id: required"),
    ({"mail": {"desktop_id": "thunderbird", "cmd": "x"}}, "unknown key(s) 'cmd'"),
    ({"mail": {"desktop_id": "../x"}}, "apps.mail.desktop_id"),
    ({"mail": {"desktop_id": "a+b"}}, "apps.mail.desktop_id"),
    ({"mail": {"desktop_id": "-x"}}, "apps.mail.desktop_id"),
    ({"mail": {"desktop_id": "x.desktop"}}, "apps.mail.desktop_id"),
    ({"mail": {"desktop_id": "x y"}}, "apps.mail.desktop_id"),
    ({"mail": {"desktop_id": 3}}, "apps.mail.desktop_id"),
    ({"terminal": {"enabled": "no"}}, "apps.terminal.enabled"),
])
def test_invalid_apps(apps, where):
    with pytest.raises(ConfigError, match=None) as info:
        parse_config({"apps": apps})
    assert where in str(info.value)
