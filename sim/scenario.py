"""Scenarios: the simulated Qubes described as plain data (TOML or JSON).

A scenario names qubes and fault knobs; a new situation needs a new data file,
not code. Top-level keys:

    description = "..."            # optional, free text
    extends = "default"            # optional: a shipped scenario's name, or a
                                   # path relative to this file; its qubes and
                                   # faults are the starting point
    remove_qubes = ["vault"]       # optional: drop these qubes of the base
    release = "4.3"                # optional: 4.2 (no preloads), 4.3 (default), 4.4
    [globals]                      # optional: qubesd's default_netvm and
    default_netvm = "sys-firewall" # default_dispvm, which a qube's netvm or
                                   # default_dispvm not given falls back to
    [qubes.NAME]                   # one table per qube; with `extends`, the
    klass = "AppVM"                # fields given replace the base's fields
    ...
    [faults]                       # knobs, see FAULTS below

Qube fields (QUBE_FIELDS): klass (AdminVM, TemplateVM, AppVM, DispVM,
StandaloneVM; required), template, netvm, default_dispvm (qube names; "" =
none), template_for_dispvms, auto_cleanup, provides_network (booleans),
qrexec_timeout (seconds), features (table; values become strings as in
qubesd), tags (list), power_state (Halted, Running, Paused, Transient).

Everything is checked: unknown keys, wrong types and references to qubes that
do not exist (or cannot play that role, e.g. a netvm without
provides_network) raise ScenarioError naming the file and the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

KLASSES = ("AdminVM", "TemplateVM", "AppVM", "DispVM", "StandaloneVM")
POWER_STATES = ("Halted", "Running", "Paused", "Transient")
BEHAVIOURS = ("edit", "noop", "hang", "cat", "partial_reply", "fail")
# qubes.PdfConvert: "real" runs the unmodified upstream server
# (qubespdfconverter.server); "held" answers one valid page once <sim dir>/release
# exists; the others are hostile servers (sim/disposable.py).
CONVERTERS = ("real", "held", "oversize", "short", "extra", "lying_count", "hang",
              "exit_mid_page", "bad_count", "bad_dimensions", "endless_line")
# Qubes' own rule for qube names (qubes.vm.validate_name).
QUBE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,30}")

# field -> (accepted types, default). None as a default means "unset".
QUBE_FIELDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "klass": ((str,), None),
    "template": ((str,), None),
    "netvm": ((str,), None),  # absent or "" = no network
    "default_dispvm": ((str,), None),  # absent or "" = none
    "template_for_dispvms": ((bool,), False),
    "auto_cleanup": ((bool,), False),
    "qrexec_timeout": ((int,), 60),
    "features": ((dict,), None),
    "tags": ((list,), None),
    "power_state": ((str,), "Halted"),
    "provides_network": ((bool,), False),
}

# knob -> (accepted types, default)
FAULTS: dict[str, tuple[tuple[type, ...], Any]] = {
    "create_fails": ((bool,), False),        # CreateDisposable raises
    "start_fails": ((bool,), False),         # Start raises ...
    "start_fails_keeps_qube": ((bool,), True),  # ... and the halted disposable stays (or not)
    "start_delay": ((int, float), 0),        # seconds a Start takes (a slow boot)
    "kill_fails": ((int,), 0),               # this many Kill calls fail (then they work)
    "qubesd_unreachable": ((bool,), False),  # every call raises QubesdUnreachable
    "netvm_set_ignored": ((bool,), False),   # property.Set netvm does nothing
    "default_dispvm_set_ignored": ((bool,), False),  # ... and so for default_dispvm
    "wrong_klass": ((bool,), False),         # new disposables read back as AppVM
    "no_auto_cleanup": ((bool,), False),     # new disposables lack auto_cleanup (like a named one)
    "wrong_template": ((bool, str), False),  # ... read back with another template
    "disposable_behaviour": ((str,), "edit"),  # what the disposable side does, BEHAVIOURS
    "converter": ((str,), "real"),           # what qubes.PdfConvert does, CONVERTERS
    "netvm_change_to": ((str,), None),       # disposable side sets its netvm ("" = none)
    "policy_deny": ((list,), None),          # services the qrexec stand-in refuses (126)
    "qubesd_refuses": ((list,), None),       # Admin API methods qubesd refuses (PermissionDenied)
    # [method, "before" | "after", seconds]: that Admin API call pauses before
    # qubesd runs it (listed in the state's "paused") or after, before it answers
    "slow_call": ((list,), None),
}

TOP_LEVEL = ("description", "extends", "remove_qubes", "release", "globals", "qubes", "faults")
# The Qubes release whose qubesd the model answers like (replies differ in
# details; R4.2 has no preloads): tests/realqubesd/test_differential.py.
RELEASES = ("4.2", "4.3", "4.4")
# qubesd's global properties a qube's default reads (qubes/app.py Qubes):
# a qube name, absent = none.
GLOBALS = ("default_netvm", "default_dispvm")
# Qube fields that are qubesd properties with a default: one a scenario does
# not give reads as `default=True` (DEFAULT_FIELDS go to the qube's
# default_props), as in a qubes.xml that never set it.
DEFAULT_FIELDS = ("netvm", "default_dispvm", "provides_network", "qrexec_timeout",
                  "template_for_dispvms", "auto_cleanup")


class ScenarioError(ValueError):
    """The scenario is not valid; the message says where and why."""


def default_faults() -> dict[str, Any]:
    return {k: default for k, (_, default) in FAULTS.items() if default is not None}


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python; a count must not accept true/false.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _type_names(types: tuple[type, ...]) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table",
             list: "list"}
    return " or ".join(names[t] for t in types)


def check_fault(key: str, value: Any, where: str = "faults") -> Any:
    """The validated value of one fault knob (also used by the harness)."""
    if key not in FAULTS:
        raise ScenarioError(f"{where}: unknown fault {key!r} (known: {', '.join(FAULTS)})")
    types, _ = FAULTS[key]
    if not _type_ok(value, types):
        raise ScenarioError(f"{where}.{key}: expected {_type_names(types)}, "
                            f"got {type(value).__name__}")
    if key == "disposable_behaviour" and value not in BEHAVIOURS:
        raise ScenarioError(f"{where}.{key}: {value!r} is not one of {', '.join(BEHAVIOURS)}")
    if key == "converter" and value not in CONVERTERS:
        raise ScenarioError(f"{where}.{key}: {value!r} is not one of {', '.join(CONVERTERS)}")
    if key in ("policy_deny", "qubesd_refuses") \
            and not all(isinstance(s, str) and s for s in value):
        raise ScenarioError(f"{where}.{key}: expected a list of service or method names")
    if key == "start_delay" and not 0 <= value <= 3600:
        raise ScenarioError(f"{where}.{key}: expected 0 to 3600 seconds")
    if key == "slow_call" and not (
            len(value) == 3 and isinstance(value[0], str) and value[1] in ("before", "after")
            and _type_ok(value[2], (int, float)) and 0 <= value[2] <= 3600):
        raise ScenarioError(f"{where}.{key}: expected [method, \"before\" or \"after\", "
                            f"seconds]")
    if key == "wrong_template" and value == "":
        raise ScenarioError(f"{where}.{key}: expected a qube name or true/false")
    return value


def _feature_value(value: Any, where: str) -> str:
    # qubesd stores feature values as strings: True -> "1", False -> "".
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, (int, str)):
        return str(value)
    raise ScenarioError(f"{where}: feature values are strings, integers or booleans")


def _check_qube_fields(name: str, fields: Any, where: str) -> dict[str, Any]:
    if not isinstance(fields, dict):
        raise ScenarioError(f"{where}: expected a table")
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in QUBE_FIELDS:
            raise ScenarioError(f"{where}: unknown key {key!r} "
                                f"(known: {', '.join(QUBE_FIELDS)})")
        types, _ = QUBE_FIELDS[key]
        if not _type_ok(value, types):
            raise ScenarioError(f"{where}.{key}: expected {_type_names(types)}, "
                                f"got {type(value).__name__}")
        if key == "features":
            value = {str(k): _feature_value(v, f"{where}.features.{k}") for k, v in value.items()}
        elif key == "tags":
            if not all(isinstance(t, str) and t for t in value):
                raise ScenarioError(f"{where}.tags: expected a list of non-empty strings")
            value = sorted(set(value))
        elif key in ("netvm", "default_dispvm") and value == "":
            value = None
        out[key] = value
    return out


def _complete(name: str, given: dict[str, Any], where: str) -> dict[str, Any]:
    """Fill in defaults and check what depends only on this qube."""
    q = {k: default for k, (_, default) in QUBE_FIELDS.items()}
    q["features"] = {}
    q["tags"] = []
    q.update(given)
    klass = q["klass"]
    if klass is None:
        raise ScenarioError(f"{where}: klass is missing")
    if klass not in KLASSES:
        raise ScenarioError(f"{where}.klass: {klass!r} is not one of {', '.join(KLASSES)}")
    if q["power_state"] not in POWER_STATES:
        raise ScenarioError(f"{where}.power_state: {q['power_state']!r} is not one of "
                            f"{', '.join(POWER_STATES)}")
    if q["qrexec_timeout"] <= 0:
        raise ScenarioError(f"{where}.qrexec_timeout: must be positive")
    if klass in ("AppVM", "DispVM") and not q["template"]:
        raise ScenarioError(f"{where}: an {klass} needs a template")
    if klass not in ("AppVM", "DispVM") and q["template"]:
        raise ScenarioError(f"{where}: a {klass} has no template")
    if q["template_for_dispvms"] and klass not in ("AppVM", "StandaloneVM"):
        raise ScenarioError(f"{where}: only an AppVM can be template_for_dispvms")
    if q["auto_cleanup"] and klass != "DispVM":
        raise ScenarioError(f"{where}: only a DispVM has auto_cleanup")
    if klass == "AdminVM":
        if q["netvm"] or q["provides_network"]:
            raise ScenarioError(f"{where}: dom0 has no netvm and provides no network")
        q["power_state"] = "Running"
    if klass == "DispVM" and q["default_dispvm"] is None and "default_dispvm" not in given:
        q["default_dispvm"] = q["template"]  # upstream: a disposable's default is its DVM
    q["default_props"] = [f for f in DEFAULT_FIELDS if f not in given]
    if klass != "AdminVM":  # qubes/ext/gui.py, audio.py: tags naming guivm/audiovm (dom0)
        q["tags"] = sorted({*q["tags"], "audiovm-dom0", "guivm-dom0"})
    q["netvm_set_count"] = 0  # bumped on every netvm write (what watch_netvm sees)
    return q


def _check_references(qubes: dict[str, dict[str, Any]], source: str) -> None:
    admins = [n for n, q in qubes.items() if q["klass"] == "AdminVM"]
    if admins != ["dom0"]:
        raise ScenarioError(f"{source}: there must be exactly one AdminVM, named dom0")
    for name, q in qubes.items():
        where = f"{source}: qubes.{name}"
        tpl = q["template"]
        if tpl is not None:
            if tpl not in qubes:
                raise ScenarioError(f"{where}.template: no qube {tpl!r}")
            if q["klass"] == "AppVM" and qubes[tpl]["klass"] != "TemplateVM":
                raise ScenarioError(f"{where}.template: {tpl} is not a TemplateVM")
            if q["klass"] == "DispVM" and not qubes[tpl]["template_for_dispvms"]:
                raise ScenarioError(f"{where}.template: {tpl} is not template_for_dispvms")
        net = q["netvm"]
        if net is not None:
            if net not in qubes:
                raise ScenarioError(f"{where}.netvm: no qube {net!r}")
            if net == name or not qubes[net]["provides_network"]:
                raise ScenarioError(f"{where}.netvm: {net} does not provide network")
        dvm = q["default_dispvm"]
        if dvm is not None:
            if dvm not in qubes:
                raise ScenarioError(f"{where}.default_dispvm: no qube {dvm!r}")
            if not qubes[dvm]["template_for_dispvms"]:
                raise ScenarioError(f"{where}.default_dispvm: {dvm} is not "
                                    f"template_for_dispvms")


def validate(data: Mapping[str, Any], source: str = "scenario",
             base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"qubes": {...complete records...}, "faults": {...}} from raw scenario
    data; *base* is an already validated scenario that this one extends."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: expected a table at the top level")
    for key in data:
        if key not in TOP_LEVEL:
            raise ScenarioError(f"{source}: unknown top-level key {key!r} "
                                f"(known: {', '.join(TOP_LEVEL)})")
    if not isinstance(data.get("description", ""), str):
        raise ScenarioError(f"{source}: description must be a string")

    raw: dict[str, dict[str, Any]] = {}
    faults = default_faults()
    if base is not None:
        raw = {n: {k: v for k, v in q.items()
                   if k in QUBE_FIELDS and k not in q.get("default_props", ())}
               for n, q in base["qubes"].items()}
        faults.update(base["faults"])
    removed = data.get("remove_qubes", [])
    if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
        raise ScenarioError(f"{source}: remove_qubes must be a list of qube names")
    for n in removed:
        if n not in raw:
            raise ScenarioError(f"{source}: remove_qubes: no qube {n!r} to remove")
        del raw[n]

    qubes_in = data.get("qubes", {})
    if not isinstance(qubes_in, Mapping):
        raise ScenarioError(f"{source}: qubes must be a table of tables")
    for name, fields in qubes_in.items():
        if not QUBE_NAME_RE.fullmatch(name):
            raise ScenarioError(f"{source}: {name!r} is not a valid qube name")
        raw.setdefault(name, {}).update(
            _check_qube_fields(name, fields, f"{source}: qubes.{name}"))
    if not raw:
        raise ScenarioError(f"{source}: no qubes")
    qubes = {n: _complete(n, given, f"{source}: qubes.{n}") for n, given in raw.items()}
    _check_references(qubes, source)
    glob = dict(base.get("globals", {})) if base is not None else {}
    globals_in = data.get("globals", {})
    if not isinstance(globals_in, Mapping):
        raise ScenarioError(f"{source}: globals must be a table")
    for key, value in globals_in.items():
        if key not in GLOBALS:
            raise ScenarioError(f"{source}: globals: unknown key {key!r} "
                                f"(known: {', '.join(GLOBALS)})")
        if not isinstance(value, str) or value not in qubes:
            raise ScenarioError(f"{source}: globals.{key}: no qube {value!r}")
        glob[key] = value

    faults_in = data.get("faults", {})
    if not isinstance(faults_in, Mapping):
        raise ScenarioError(f"{source}: faults must be a table")
    for key, value in faults_in.items():
        faults[key] = check_fault(key, value, f"{source}: faults")
    release = data.get("release", base.get("release", "4.3") if base is not None else "4.3")
    if release not in RELEASES:
        raise ScenarioError(f"{source}: release must be one of {', '.join(RELEASES)}")
    return {"qubes": qubes, "faults": faults, "globals": glob, "release": release}


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        import tomllib

        return tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # TOMLDecodeError is a ValueError
        raise ScenarioError(f"{path}: does not parse: {e}") from None


def resolve_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A shipped scenario by bare name ("default"), else a file path."""
    text = str(name_or_path)
    if "/" not in text and not text.endswith((".toml", ".json")):
        return SCENARIO_DIR / f"{text}.toml"
    path = Path(text)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    return path


def load(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read, merge (`extends`) and validate a scenario file."""
    path = resolve_path(name_or_path).resolve()
    if path in _seen:
        raise ScenarioError(f"{path}: 'extends' loops back to itself")
    data = _parse(path)
    base = None
    if "extends" in data:
        if not isinstance(data["extends"], str) or not data["extends"]:
            raise ScenarioError(f"{path}: extends must be a scenario name or path")
        base = load(resolve_path(data["extends"], path.parent), (*_seen, path))
    return validate(data, str(path), base)


def shipped() -> list[str]:
    """Names of the scenarios that come with the simulation."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
