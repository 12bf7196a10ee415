"""Pin profiles to the DVM templates `setup` made, in the administrator's
profiles.toml, and take the pins out again (`setup --undo`).

The file is edited as text, so that its comments and layout stay: every line
setup writes ends with TAG, a line it replaces is kept as a comment starting
with REPLACED, and undo removes exactly those. The result is parsed with the
broker's own parse_config before it is written (atomically, mode and owner
kept); a file whose layout setup cannot edit safely (a profile given as an
inline table or dotted keys) is refused with the line to add by hand.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping

from whonix_open.dom0.config import Config, ConfigError, parse_config

TAG = "  # whonix-open-admin setup"
REPLACED = "# whonix-open-admin setup replaced: "
CREATED = "# whonix-open profiles (README: Profiles), made by" + TAG
SEPARATOR = "# --- tables added by whonix-open-admin setup (setup --undo removes them) ---"


class EditError(Exception):
    """profiles.toml cannot be edited safely; the message says what to do."""


def read(path: str) -> str | None:
    """The file's text, None if there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise EditError(f"{path}: cannot be read: {e}") from None


def parse(text: str | None, path: str) -> Config:
    try:
        return parse_config(tomllib.loads(text) if text else {})
    except (tomllib.TOMLDecodeError, ConfigError) as e:
        raise EditError(f"{path}: {e}") from None


def _header(profile: str) -> re.Pattern[str]:
    name = re.escape(profile)
    return re.compile(rf'\s*\[\s*profiles\s*\.\s*(?:{name}|"{name}")\s*\]\s*(#.*)?')


def pin(text: str | None, pins: Mapping[str, str], path: str) -> str:
    """*text* with `dvm = "QUBE"` for each profile -> QUBE in *pins*."""
    lines = (text or "").splitlines()
    if text is None:
        lines = [CREATED]
    for profile, dvm in pins.items():
        value = f'dvm = "{dvm}"{TAG}'
        start = next((i for i, line in enumerate(lines) if _header(profile).fullmatch(line)),
                     None)
        if start is None:
            if SEPARATOR not in lines:
                lines.append(SEPARATOR)
            lines += [f"[profiles.{profile}]{TAG}", value]
            continue
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].lstrip().startswith("[")), len(lines))
        old = next((i for i in range(start + 1, end)
                    if re.match(r"\s*dvm\s*=", lines[i])), None)
        if old is None:
            lines.insert(start + 1, value)
        else:
            lines[old:old + 1] = [REPLACED + lines[old], value]
    new = "\n".join(lines) + "\n"
    config = parse(new, path)
    for profile, dvm in pins.items():
        if config.profiles[profile].dvm != dvm:
            raise EditError(f'{path}: setup cannot edit [profiles.{profile}] here; add '
                            f'dvm = "{dvm}" to it yourself and run setup again')
    return new


def unpin(text: str | None) -> str | None:
    """*text* without what setup wrote; None if setup created the file and
    nothing else is in it."""
    if text is None:
        return None
    created = False
    kept = []
    for line in text.splitlines():
        if line == CREATED:
            created = True
        elif line == SEPARATOR:
            continue
        elif line.startswith(REPLACED):
            kept.append(line[len(REPLACED):])
        elif not line.endswith(TAG):
            kept.append(line)
    if created and not any(line.strip() for line in kept):
        return None
    return "\n".join(kept) + ("\n" if kept and text.endswith("\n") else "")


def check_writable(path: str) -> None:
    """Before any change: can write() replace *path* (its directory, or the
    nearest one that exists, must take a new file)?"""
    probe = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK) \
            or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise EditError(f"{path} cannot be written here (in dom0 setup runs as root: "
                        f"sudo whonix-open-admin setup)")


def write(path: str, text: str | None) -> None:
    """Replace the file atomically (None: remove it), keeping its mode and owner."""
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o644, None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".profiles.toml.", dir=directory)
    except OSError as e:
        raise EditError(f"{path}: cannot be written: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise EditError(f"{path}: cannot be written: {e.strerror}") from None
