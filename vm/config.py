"""The per-user config file: $XDG_CONFIG_HOME/whonix-open/config.toml (found
with pyxdg, so a template-wide /etc/xdg/whonix-open/config.toml works too; the
user's own file wins).

    default_profile = "offline"      # a profile name dom0 knows
    view_only = true                 # open view-only unless --edit is given
    require_whonix_gateway = true    # refuse (not just warn) unless dom0 says
                                     # this qube is behind a Whonix-Gateway
    max_reply_size = "8G"            # the most an edit may come back as (bytes,
                                     # or K/M/G/T); default: vm/replycap.py

Unknown keys and wrong types are errors: a typo must not silently weaken what
the user asked for.
"""

from __future__ import annotations

import os
from collections import namedtuple

from whonix_open.contract import is_profile_name

CONFIG_RESOURCE = "whonix-open"
CONFIG_NAME = "config.toml"


class ConfigError(Exception):
    """The config file is unreadable or invalid (message names file and key)."""


# A namedtuple, not a dataclass or typing.NamedTuple: `whonix-open URL` loads
# this on its fast path, and those imports cost more than the rest of it.
UserConfig = namedtuple(
    "UserConfig",
    # source: the file it came from, None for built-in defaults
    # max_reply_size: bytes, None for the default cap (vm/replycap.py)
    ["default_profile", "view_only", "require_whonix_gateway", "max_reply_size", "source"],
    defaults=(None, False, False, None, None),
)


_TYPES: dict[str, type] = {
    "default_profile": str,
    "view_only": bool,
    "require_whonix_gateway": bool,
    "max_reply_size": str,
}


def find_config() -> str | None:
    """The first config.toml in the XDG config dirs, or None."""
    from xdg.BaseDirectory import load_first_config  # lazy: keeps --help fast

    return load_first_config(CONFIG_RESOURCE, CONFIG_NAME)


def parse(text: str, source: str) -> UserConfig:
    import tomllib  # only when there is a file: it is slow to import

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_TYPES))})"
        )
    for key, value in data.items():
        want = _TYPES[key]
        if type(value) is not want:  # not isinstance: True is not an int here
            raise ConfigError(
                f"{source}: {key} must be a {want.__name__}, not {type(value).__name__}"
            )
    profile = data.get("default_profile")
    if profile is not None and not is_profile_name(profile):
        raise ConfigError(
            f"{source}: default_profile {profile!r} is not a profile name "
            "(lowercase letters, digits and '-', at most 31)"
        )
    max_reply = data.get("max_reply_size")
    if max_reply is not None:
        from whonix_open.vm.replycap import SizeError, parse_size

        try:
            max_reply = parse_size(max_reply)
        except SizeError as exc:
            raise ConfigError(f"{source}: max_reply_size: {exc}") from None
    return UserConfig(
        default_profile=profile,
        max_reply_size=max_reply,
        view_only=data.get("view_only", False),
        require_whonix_gateway=data.get("require_whonix_gateway", False),
        source=source,
    )


def load(path: str | None = None) -> UserConfig:
    """Read *path*, or the XDG config file; defaults when there is none."""
    if path is None:
        path = find_config()
        if path is None:
            return UserConfig()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return UserConfig()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read it: it is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or 'I/O error'}") from None
    return parse(text, os.fspath(path))
