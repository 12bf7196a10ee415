"""A strict reader for desktop-entry style files (the freedesktop Desktop Entry spec).

desktop-file-validate refuses KDE service menus and file-manager Type=Action
files outright, so those are checked with this instead: every line must be a
comment, blank, a [group] or key=value; no duplicate groups or keys; key names
as the spec allows; and Exec values tokenised by the spec's quoting rules
(double quotes only; reserved characters only inside quotes).
"""

from __future__ import annotations

import re
from pathlib import Path

GROUP_RE = re.compile(r"\[([^\[\]\x00-\x1f]+)\]")
KEY_RE = re.compile(r"([A-Za-z0-9-]+)(\[[A-Za-z_@.]+\])?")
RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
FIELD_CODES = {"%f", "%F", "%u", "%U", "%i", "%c", "%k"}


class EntryError(ValueError):
    pass


def parse(path: Path) -> dict[str, dict[str, str]]:
    """Groups -> keys -> raw values, refusing anything the spec does not allow."""
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path.name}:{number}"
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            m = GROUP_RE.fullmatch(line)
            if not m:
                raise EntryError(f"{where}: bad group header {line!r}")
            if m.group(1) in groups:
                raise EntryError(f"{where}: duplicate group [{m.group(1)}]")
            current = groups[m.group(1)] = {}
            continue
        if current is None:
            raise EntryError(f"{where}: key before the first group")
        key, sep, value = line.partition("=")
        key = key.rstrip()
        if not sep or not KEY_RE.fullmatch(key):
            raise EntryError(f"{where}: not a key=value line: {line!r}")
        if key in current:
            raise EntryError(f"{where}: duplicate key {key}")
        current[key] = value.lstrip()
    if not groups or next(iter(groups)) != "Desktop Entry":
        raise EntryError(f"{path.name}: the first group must be [Desktop Entry]")
    return groups


def unescape_string(value: str) -> str:
    """The key-file level escapes (\\s \\n \\t \\r \\\\)."""
    out, i = [], 0
    table = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in table:
            out.append(table[value[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def exec_argv(value: str) -> list[str]:
    """Split an Exec value into arguments as the spec says, or raise EntryError."""
    text = unescape_string(value)
    args: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        if text[i] == '"':
            i += 1
            arg = []
            while True:
                if i >= len(text):
                    raise EntryError(f"unterminated quote in Exec {value!r}")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    if i + 1 >= len(text) or text[i + 1] not in '"`$\\':
                        raise EntryError(f"bad escape in Exec {value!r}")
                    arg.append(text[i + 1])
                    i += 2
                    continue
                if ch in '`$':
                    raise EntryError(f"{ch!r} must be escaped inside quotes in Exec {value!r}")
                arg.append(ch)
                i += 1
            if i < len(text) and text[i] != " ":
                raise EntryError(f"quoted argument runs into text in Exec {value!r}")
            args.append("".join(arg))
            continue
        start = i
        while i < len(text) and text[i] != " ":
            if text[i] in RESERVED:
                raise EntryError(f"reserved character {text[i]!r} unquoted in Exec {value!r}")
            i += 1
        word = text[start:i]
        if "%" in word and word not in FIELD_CODES and word != "%%":
            raise EntryError(f"unknown field code in {word!r} (Exec {value!r})")
        args.append(word)
    if not args:
        raise EntryError("empty Exec")
    return args
