"""Profiles: the built-in `tor` and `offline`, and the administrator's
/etc/whonix-open/profiles.toml.

    default_profile = "tor"          # optional

    [limits]                         # optional
    per_qube = 3                     # open disposables per qube (its disposables included)
    total = 10                       # open disposables in all; more than 2 x per_qube
    max_session_minutes = 480        # then dom0 kills the disposable (exit 74)
    caller_wait_seconds = 30         # for the caller's first byte (else exit 75)

    [profiles.tor-2]                 # a new profile
    network = "tor"                  # "tor" or "offline"; required for new ones
    gateway = "sys-whonix-2"         # optional, tor only: pin the Whonix-Gateway
    dvm = "whonix-workstation-18-dvm"  # optional: pin the DVM template

    [profiles.tor]                   # built-ins may pin dvm/gateway, not change network
    gateway = "sys-whonix"

    [apps.mail]                      # allow one more app (whonix.StartAppInDisposable)
    desktop_id = "thunderbird"       # started as qubes.StartApp+thunderbird in the disposable

    [apps.terminal]                  # the built-ins are torbrowser and terminal
    enabled = false                  # take one away

Anything else - an unknown key, a wrong type, a bad name, a file that does not
parse - is a ConfigError: the service refuses (66) rather than guess.
Whether a pinned qube really is a Whonix-Gateway / Whonix-Workstation DVM
template is checked against qubesd when a request uses the profile.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import NamedTuple

from whonix_open.contract import BUILTIN_PROFILES, DEFAULT_PROFILE, is_app_name, is_profile_name
from whonix_open.dom0.request import is_qube_name

DEFAULT_PATH = "/etc/whonix-open/profiles.toml"
CONFIG_ENV = "WHONIX_OPEN_CONFIG"
NETWORKS = ("tor", "offline")


class ConfigError(Exception):
    """The configuration is unusable; the message says where and why."""


class Profile(NamedTuple):
    name: str
    network: str  # "tor" | "offline"
    dvm: str | None = None  # None: chosen automatically
    gateway: str | None = None  # None: chosen automatically (tor only)

    @property
    def offline(self) -> bool:
        return self.network == "offline"


class Limits(NamedTuple):
    per_qube: int = 3
    total: int = 10
    max_session_minutes: int = 480
    caller_wait_seconds: int = 30


# Apps a qube (or dom0's menu) may start in a disposable: name -> desktop id
# in the disposable, without ".desktop" (what qubes.StartApp takes): Whonix's
# Tor Browser launcher, and the Qubes agent's own "Run Terminal", which runs
# the template's x-terminal-emulator (Whonix 17 and 18 alike; QUBES-FACTS.md).
BUILTIN_APPS = {"torbrowser": "janondisttorbrowser", "terminal": "qubes-run-terminal"}
# A desktop file's basename: qrexec's argument charset minus "+" (the
# separator), no "/" (qubes.StartApp looks it up under applications/).
DESKTOP_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class Config(NamedTuple):
    profiles: Mapping[str, Profile]
    default_profile: str = DEFAULT_PROFILE
    limits: Limits = Limits()
    apps: Mapping[str, str] = BUILTIN_APPS

    def profile(self, name: str | None) -> Profile | None:
        """The named profile (None: the default), or None if unknown."""
        return self.profiles.get(self.default_profile if name is None else name)


def _builtins() -> dict[str, Profile]:
    return {name: Profile(name=name, network=name) for name in BUILTIN_PROFILES}


def _check_keys(table: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _qube_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not is_qube_name(value):
        raise ConfigError(f"{where}: must be a qube name")
    return value


# key: (lowest, highest) allowed value
LIMIT_RANGES = {"per_qube": (1, 1000), "total": (3, 1000),
                "max_session_minutes": (1, 10080), "caller_wait_seconds": (1, 300)}


def _limit(value: object, key: str) -> int:
    low, high = LIMIT_RANGES[key]
    # bool is an int in Python; a limit of `true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"limits.{key}: must be a whole number from {low} to {high}")
    return value


def _profile(name: str, table: object, base: Profile | None) -> Profile:
    where = f"profiles.{name}"
    if not is_profile_name(name):
        raise ConfigError(f"{where}: a profile name is [a-z0-9][a-z0-9-]{{0,30}}")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    _check_keys(table, {"network", "dvm", "gateway"}, where)
    network = table.get("network", base.network if base else None)
    if network not in NETWORKS:
        raise ConfigError(f"{where}.network: must be \"tor\" or \"offline\"")
    if base is not None and network != base.network:
        raise ConfigError(f"{where}.network: the built-in profile's network cannot be changed")
    dvm = _qube_name(table["dvm"], f"{where}.dvm") if "dvm" in table else None
    gateway = _qube_name(table["gateway"], f"{where}.gateway") if "gateway" in table else None
    if gateway is not None and network == "offline":
        raise ConfigError(f"{where}.gateway: an offline profile has no gateway")
    return Profile(name=name, network=network, dvm=dvm, gateway=gateway)


def _apps(tables: object) -> dict[str, str]:
    if not isinstance(tables, dict):
        raise ConfigError("apps: must be a table of apps")
    apps = dict(BUILTIN_APPS)
    for name, table in tables.items():
        where = f"apps.{name}"
        if not is_app_name(name):
            raise ConfigError(f"{where}: an app name is [a-z0-9][a-z0-9-]{{0,30}}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(table, {"desktop_id", "enabled"}, where)
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.enabled: must be true or false")
        if "desktop_id" in table:
            value = table["desktop_id"]
            if not isinstance(value, str) or DESKTOP_ID_RE.fullmatch(value) is None \
                    or value.endswith(".desktop"):
                raise ConfigError(f"{where}.desktop_id: must be a desktop file name without "
                                  f"\".desktop\" ([A-Za-z0-9][A-Za-z0-9._-]{{0,99}})")
            apps[name] = value
        elif name not in BUILTIN_APPS and enabled:
            raise ConfigError(f"{where}.desktop_id: required for a new app")
        if not enabled:
            apps.pop(name, None)
    return apps


def parse_config(data: Mapping) -> Config:
    """Validate parsed TOML into a Config (raises ConfigError)."""
    _check_keys(data, {"default_profile", "limits", "profiles", "apps"}, "profiles.toml")
    profiles = _builtins()

    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise ConfigError("profiles: must be a table of profiles")
    for name, table in tables.items():
        profiles[name] = _profile(name, table, profiles.get(name) if name in BUILTIN_PROFILES
                                  else None)

    default = data.get("default_profile", DEFAULT_PROFILE)
    if not isinstance(default, str) or default not in profiles:
        raise ConfigError("default_profile: must name a defined profile")

    limits_table = data.get("limits", {})
    if not isinstance(limits_table, dict):
        raise ConfigError("limits: must be a table")
    _check_keys(limits_table, set(LIMIT_RANGES), "limits")
    limits = Limits(**{key: _limit(limits_table.get(key, getattr(Limits(), key)), key)
                       for key in LIMIT_RANGES})
    # A qube's own sessions and those of the disposables that share one owner
    # (sessions.SHARED_DISPOSABLES) must never fill every slot.
    if 2 * limits.per_qube >= limits.total:
        raise ConfigError("limits: total must be more than twice per_qube, so that no "
                          "qube together with disposables can take every slot")
    return Config(profiles=profiles, default_profile=default, limits=limits,
                  apps=_apps(data.get("apps", {})))


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """The configuration in force: built-ins plus the file, if there is one."""
    env = os.environ if env is None else env
    path = env.get(CONFIG_ENV, DEFAULT_PATH)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; tomllib only if there is a file
    except FileNotFoundError:
        return parse_config({})
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror}") from None
    import tomllib

    with f:
        try:
            data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot be read or parsed: {e}") from None
    return parse_config(data)
