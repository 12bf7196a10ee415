"""A small reader of the qrexec policy format (qubes-core-qrexec
doc/multifile-policy.markdown), for tests only: python3-qrexec is a Qubes
package and not on PyPI. It is strict on purpose - anything it does not know
is an error - and evaluates requests the way qrexec does: files in name
order, first matching rule wins, no match = deny."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FILE_NAME_RE = re.compile(r"[0-9a-z_.-]+\.policy")
SERVICE_RE = re.compile(r"[A-Za-z0-9_.-]+|\*")
ARG_RE = re.compile(r"\*|\+[A-Za-z0-9_.+-]*")
ACTIONS = {"allow": {"target", "user", "notify", "autostart"},
           "deny": {"notify"},
           "ask": {"target", "default_target", "user", "notify", "autostart"}}
TOKENS = ("@anyvm", "@adminvm", "@default", "@dispvm")
TOKEN_PREFIXES = ("@tag:", "@type:", "@dispvm:")


class PolicyError(Exception):
    pass


@dataclass(frozen=True)
class Qube:
    name: str
    klass: str = "AppVM"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    where: str
    service: str
    arg: str
    source: str
    target: str
    action: str
    params: dict


def _check_spec(spec: str, where: str) -> None:
    if spec in TOKENS or spec.startswith(TOKEN_PREFIXES) or spec == "dom0":
        return
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,30}", spec):
        raise PolicyError(f"{where}: bad qube specification {spec!r}")


def parse_file(path: Path) -> list[Rule]:
    if not FILE_NAME_RE.fullmatch(path.name):
        raise PolicyError(f"{path.name}: invalid policy file name (breaks every qrexec call)")
    rules = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{n}"
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("!"):
            continue
        if "#" in line:
            raise PolicyError(f"{where}: no comments after a rule")
        parts = line.split()
        if len(parts) < 5:
            raise PolicyError(f"{where}: a rule has at least 5 fields")
        service, arg, source, target, action, *params = parts
        if not SERVICE_RE.fullmatch(service) or not ARG_RE.fullmatch(arg):
            raise PolicyError(f"{where}: bad service or argument")
        if service == "*" and arg != "*":
            raise PolicyError(f"{where}: a * service takes a * argument")
        _check_spec(source, where)
        _check_spec(target, where)
        if action not in ACTIONS:
            raise PolicyError(f"{where}: unknown action {action!r}")
        kv = {}
        for p in params:
            key, eq, value = p.partition("=")
            if not eq or key not in ACTIONS[action]:
                raise PolicyError(f"{where}: bad parameter {p!r} for {action}")
            kv[key] = value
        rules.append(Rule(where, service, arg, source, target, action, kv))
    return rules


def _source_matches(spec: str, q: Qube) -> bool:
    if spec == "@adminvm":
        return q.name == "dom0"
    if q.name == "dom0":
        return spec == "dom0"
    if spec == "@anyvm":
        return True
    if spec.startswith("@tag:"):
        return spec[5:] in q.tags
    if spec.startswith("@type:"):
        return spec[6:] == q.klass
    return spec == q.name


def _target_matches(spec: str, target: str) -> bool:
    if target in ("dom0", "@adminvm"):
        return spec in ("@adminvm", "dom0")
    if spec == "@anyvm":
        return not target.startswith("@") or target.startswith("@dispvm")
    return spec == target


def evaluate(rules: list[Rule], service: str, arg: str, source: Qube, target: str) -> Rule | None:
    for r in rules:
        if r.service not in ("*", service):
            continue
        if r.arg != "*" and r.arg != "+" + arg:
            continue
        if _source_matches(r.source, source) and _target_matches(r.target, target):
            return r
    return None


def load(*dirs: Path) -> list[Rule]:
    files = sorted((p for d in dirs for p in d.glob("*.policy")), key=lambda p: p.name)
    return [rule for f in files for rule in parse_file(f)]
