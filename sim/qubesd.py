"""The simulated qubesd: Admin API methods as functions on the sim state.

One model serves both ways in: SimBackend calls `call()` directly (no
qubesadmin needed, so `make demo` runs on a fresh clone) and the socket server
(qubesd_server.py) calls it for the real qubesadmin library. `call()` returns
exactly the text qubesd would send after `0\\0`, or raises a QubesdError whose
`qubesd_class` is the exception class qubesd would name in its `2\\0` frame.
Below the methods: qubes_objects.py (properties and their defaults, events,
power, new DispVMs) and preloads.py (the R4.3 preload queue).

Sources (QubesOS/qubes-core-admin, see docs/QUBES-FACTS.md):
- qubes/api/admin.py: methods, reply formats, CreateDisposable payload `uuid`
  and tags, admin.vm.List (dom0 lists all qubes, a qube only itself),
  CurrentState, Create.<class> (name+label payload, tag created-by-<src>).
- qubes/__init__.py property.__set__/__delete__: event names and kwargs
  (property-set:X name/newvalue/oldvalue; property-reset:X + property-del:X).
- qubes/vm/dispvm.py + mix/dvmtemplate.py: the preload queue (features
  preload-dispvm-max, preload-dispvm), from_appvm/request_preload/use_preload,
  refill after preload-dispvm-delay (default 3 s), outdated preloads
  (properties differing from the DVM's) discarded, DVM property change ->
  refresh after 30 s.
- qubes/vm/mix/net.py: netvm set on a paused qube is deferred (feature
  deferred-netvm-original), applied when the preload is used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from whonix_open.sim.preloads import (
    dvm_changed,
    remove_excess,
    request_preload,
    schedule_refill,
    tick,
)
from whonix_open.sim.qubes_objects import (
    LABELS,
    PROPERTIES,
    STORED,
    AlreadyExists,
    FeatureNotFound,
    LabelNotFound,
    NoSuchProperty,
    PermissionDenied,
    PropertyValueErr,
    ProtocolError,
    QubesdError,
    Unreachable,
    ValueErr,
    VMError,
    VMInUse,
    VMNotFound,
    VMNotHalted,
    VMNotStarted,
    _uuid4,
    add_tags,
    boot,
    dev_line,
    events_after,
    fire,
    get_qube,
    halt,
    klass_of,
    new_disposable,
    new_dispvm,
    preload_list,
    prop_value,
    props_of,
    r42,
    reset_stored,
    serialize,
    set_stored,
    unused_dispid,
)

__all__ = [
    "AlreadyExists",
    "Call",
    "FeatureNotFound",
    "NoSuchProperty",
    "PermissionDenied",
    "ProtocolError",
    "QubesdError",
    "Unreachable",
    "VMInUse",
    "VMNotFound",
    "VMNotHalted",
    "VMNotStarted",
    "ValueErr",
    "admin_changed",
    "admin_feature_set",
    "boot",
    "call",
    "events_after",
    "fire",
    "preload_list",
    "prop_value",
    "tick",
]


def admin_changed(st: dict[str, Any], name: str, prop: str, old: Any,
                  now: float | None = None) -> None:
    """What follows a property change made outside the Admin API (the
    harness's set_property, like qvm-prefs): its event and, on a DVM
    template, the refresh of outdated preloads."""
    now = time.time() if now is None else now
    q = st["qubes"][name]
    if prop == "netvm":
        q["netvm_set_count"] = q.get("netvm_set_count", 0) + 1
    if prop in PROPERTIES:
        fire(st, name, f"property-set:{prop}", name=prop,
             newvalue=prop_value(st, name, prop)[1], oldvalue=old)
    dvm_changed(st, name, now, None)


def admin_feature_set(st: dict[str, Any], name: str, key: str, now: float | None = None) -> None:
    """After a feature change outside the Admin API: a new preload-dispvm-max
    fills the queue at once (dvmtemplate: domain-feature-set handlers)."""
    if key.startswith("preload-dispvm-max"):
        schedule_refill(st, name, time.time() if now is None else now, 0)


# --- the Admin API methods ---------------------------------------------------

class Call:
    """One Admin API call: method, source, destination, argument, payload."""

    def __init__(self, method: str, src: str, dest: str, arg: str = "",
                 payload: bytes = b"", now: float | None = None,
                 processes: Callable[[list], None] | None = None) -> None:
        self.method, self.src, self.dest, self.arg, self.payload = method, src, dest, arg, payload
        self.now = time.time() if now is None else now
        self.processes = processes  # kills a halted qube's processes


def _list_line(st: dict[str, Any], name: str) -> str:
    """One admin.vm.List line; R4.2's qubesd does not name the uuid."""
    q = st["qubes"][name]
    if r42(st):  # R4.2's qubesd lists no uuid
        return f"{name} class={klass_of(q)} state={q['power_state']}\n"
    return (f"{name} class={klass_of(q)} state={q['power_state']} "
            f"uuid={prop_value(st, name, 'uuid')[1]}\n")


def vm_list(st: dict[str, Any], c: Call) -> str:
    get_qube(st, c.dest)
    # sorted by name, dom0 first (qubes/vm/adminvm.py AdminVM.__lt__)
    names = sorted(st["qubes"], key=lambda n: (st["qubes"][n]["klass"] != "AdminVM", n)) \
        if c.dest == "dom0" else [c.dest]
    return "".join(_list_line(st, n) for n in names)


def property_get(st: dict[str, Any], c: Call) -> str:
    value = serialize(st, c.dest, c.arg)
    fake = get_qube(st, c.dest).get("reads_back_as", {})
    if c.arg == "template" and "template" in fake:
        value = f"default=False type=vm {fake['template']}"
    return value


def property_get_all(st: dict[str, Any], c: Call) -> str:
    q = get_qube(st, c.dest)
    out = []
    for prop in props_of(st, q):
        c2 = Call(c.method, c.src, c.dest, prop)
        value = property_get(st, c2).replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"{prop} {value}\n")
    return "".join(out)


def property_list(st: dict[str, Any], c: Call) -> str:
    """admin.vm.property.List: one property name per line."""
    if c.arg:
        raise PermissionDenied("")  # self.enforce(not self.arg)
    return "".join(f"{p}\n" for p in props_of(st, get_qube(st, c.dest)))


def property_set(st: dict[str, Any], c: Call) -> None:
    q = get_qube(st, c.dest)
    if c.arg not in props_of(st, q):
        raise NoSuchProperty(f"Invalid property '{c.arg}' of {c.dest}")
    try:
        text = c.payload.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("non-ASCII value") from None
    kind = PROPERTIES[c.arg][0]
    if c.arg not in STORED:
        raise QubesdError(f"property {c.arg} is read-only here")
    value: Any
    if kind == "vm":
        value = text or None
        if value is not None and value not in st["qubes"]:
            raise PropertyValueErr(f"Can't set {c.arg} to non-existing qube {value}")
    elif kind == "bool":  # qubes/__init__.py property.bool
        if text.lower() not in ("true", "false", "1", "0", "on", "off", "yes", "no", ""):
            raise ValueErr(f"Invalid literal for boolean property: {text!r}")
        value = text.lower() in ("true", "1", "on", "yes")
    elif kind == "int":  # qubes/api/admin.py vm_property_set
        try:
            value = int(text)
        except ValueError:
            raise ValueErr("Failed to parse property value as int") from None
    else:
        value = text
    if c.arg == "netvm":
        _check_netvm(st, c.dest, q, value)
        if st["faults"].get("netvm_set_ignored"):
            return
        if q["power_state"] == "Paused" and "deferred-netvm-original" not in q["features"]:
            # net.on_property_pre_set_netvm: a paused qube's change is deferred
            q["features"]["deferred-netvm-original"] = prop_value(st, c.dest, "netvm")[1] or ""
        q["netvm_set_count"] = q.get("netvm_set_count", 0) + 1
    # default_dispvm: R4.2/R4.3's qubesd takes any qube here (a disposable
    # template is checked only when a disposable is made from it); 4.4 refuses
    if c.arg == "default_dispvm" and value is not None and dev_line(st) \
            and not st["qubes"][value].get("template_for_dispvms"):
        raise PropertyValueErr(f"Cannot set invalid property to qube {c.dest!r}, "
                               f"default_dispvm {value!r} has template_for_dispvms set to "
                               f"False")
    if c.arg == "default_dispvm" and st["faults"].get("default_dispvm_set_ignored"):
        return
    set_stored(st, c.dest, c.arg, value)
    dvm_changed(st, c.dest, c.now, c.processes)


def _check_netvm(st: dict[str, Any], name: str, q: dict[str, Any], netvm: str | None) -> None:
    if netvm is None:
        return
    nq = st["qubes"][netvm]
    if netvm == name or not nq.get("provides_network"):
        raise ValueErr(f"The {netvm} qube does not provide network")
    if q["power_state"] != "Halted" and nq["power_state"] != "Running":
        raise VMNotStarted(f"Cannot dynamically attach to stopped qube {netvm}")


def property_reset(st: dict[str, Any], c: Call) -> None:
    q = get_qube(st, c.dest)
    if c.arg not in props_of(st, q) or c.arg not in STORED:
        raise NoSuchProperty(f"Invalid property '{c.arg}' of {c.dest}")
    if c.arg == "template":
        raise ValueErr("Cannot unset template")
    reset_stored(st, c.dest, c.arg)
    dvm_changed(st, c.dest, c.now, c.processes)


def feature_get(st: dict[str, Any], c: Call) -> str:
    value = get_qube(st, c.dest)["features"].get(c.arg)
    if value is None:
        raise FeatureNotFound(f"Feature not set for domain {c.dest}: {c.arg}")
    return value


def feature_check_with_template(st: dict[str, Any], c: Call) -> str:
    q = get_qube(st, c.dest)
    while True:
        if c.arg in q["features"]:
            return q["features"][c.arg]
        if not q.get("template"):
            raise FeatureNotFound(f"Feature not set for domain {c.dest}: {c.arg}")
        q = st["qubes"][q["template"]]


def feature_set(st: dict[str, Any], c: Call) -> None:
    q = get_qube(st, c.dest)
    try:
        value = c.payload.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("Feature value contains non-ASCII characters") from None
    if c.arg == "preload-dispvm-max" and not r42(st):
        _check_preload_max(st, c.dest, value)
    q["features"][c.arg] = value
    fire(st, c.dest, f"domain-feature-set:{c.arg}", feature=c.arg, value=value)
    if c.arg.startswith("preload-dispvm-max"):
        schedule_refill(st, c.dest, c.now, 0)


def _check_preload_max(st: dict[str, Any], name: str, value: str) -> None:
    """dvmtemplate.on_feature_pre_set_preload_dispvm_max (R4.3): the qube
    must support qrexec and the RPC preloads wait for, the value be digits."""
    def with_template(key: str) -> str | None:
        try:
            return feature_check_with_template(st, Call("", "dom0", name, key))
        except FeatureNotFound:
            return None
    if not with_template("qrexec"):
        raise ValueErr("Qube does not support qrexec")
    if dev_line(st):  # 4.4 waits for the session too and names what is missing
        missing = [s for s in ("qubes.WaitForRunningSystem", "qubes.WaitForSession")
                   if not with_template(f"supported-rpc.{s}")]
        if missing:
            raise ValueErr(f"Qube does not support the RPC(s) '{', '.join(missing)}'")
    elif not with_template("supported-rpc.qubes.WaitForRunningSystem"):
        raise ValueErr("Qube does not support the RPC 'qubes.WaitForRunningSystem'")
    if not (value or "0").isdigit():
        raise ValueErr("Invalid preload-dispvm-max value: not a digit")


def feature_remove(st: dict[str, Any], c: Call) -> None:
    """admin.vm.feature.Remove; deleting preload-dispvm-max (R4.3) cleans
    up the DVM template's preloads (on_feature_delete_preload_dispvm_max)."""
    q = get_qube(st, c.dest)
    if c.arg not in q["features"]:
        raise FeatureNotFound(f"Feature not set for domain {c.dest}: {c.arg}")
    del q["features"][c.arg]
    fire(st, c.dest, f"domain-feature-delete:{c.arg}", feature=c.arg)
    if c.arg == "preload-dispvm-max" and not r42(st):
        remove_excess(st, c.dest, c.now, c.processes)


def tag_list(st: dict[str, Any], c: Call) -> str:
    return "".join(f"{t}\n" for t in sorted(get_qube(st, c.dest)["tags"]))


def tag_get(st: dict[str, Any], c: Call) -> str:
    return "1" if c.arg in get_qube(st, c.dest)["tags"] else "0"


def tag_set(st: dict[str, Any], c: Call) -> None:
    q = get_qube(st, c.dest)
    if not c.arg or not all(ch.isalnum() or ch in "_-" for ch in c.arg):
        raise ValueErr("Invalid tag name")
    if c.arg not in q["tags"]:
        add_tags(q, c.arg)
        fire(st, c.dest, f"domain-tag-add:{c.arg}", tag=c.arg)


def create_disposable(st: dict[str, Any], c: Call) -> str:
    if c.arg not in ("", "preload") or (c.arg and r42(st)):  # R4.2: no preloads
        if dev_line(st):  # 4.4: the argument is checked by a permission helper
            raise PermissionDenied("Argument not in \"'', 'preload'\"")
        raise ProtocolError("Invalid argument")
    if c.payload not in (b"", b"uuid"):
        raise ProtocolError("Invalid payload, expected empty string or 'uuid'")
    src = get_qube(st, c.src) if c.src in st["qubes"] else None
    dvm = (prop_value(st, c.src, "default_dispvm")[1] if src else None) \
        if c.dest == "dom0" else c.dest
    if dvm is None:
        raise QubesdError("no default_dispvm")
    tpl = get_qube(st, dvm)
    if not tpl.get("template_for_dispvms"):
        raise QubesdError("Refusing to create DispVM out of this AppVM, because "
                          "template_for_dispvms=False" if r42(st) else
                          "Refusing to create disposable out of app qube which has "
                          "template_for_dispvms=False")
    if c.arg == "preload":
        schedule_refill(st, dvm, c.now, 0)
        return ""
    name = request_preload(st, dvm, c.now, c.processes) or new_disposable(st, dvm, c.src)
    add_tags(st["qubes"][name], f"created-by-{c.src}", f"disp-created-by-{c.src}")
    return f"uuid:{prop_value(st, name, 'uuid')[1]}" if c.payload else name


def _create_params(st: dict[str, Any], c: Call) -> dict[str, str]:
    """The payload of admin.vm.Create.<class> (api/admin.py _vm_create):
    'name=N label=L', both required, nothing else (no pool: CreateInPool)."""
    params: dict[str, str] = {}
    try:
        for item in c.payload.decode("ascii").split(" "):
            key, value = item.split("=", 1)
            if key in params:
                raise ProtocolError("duplicated parameters")
            if key not in ("name", "label"):
                raise ProtocolError("Invalid param name")
            params[key] = value
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("Invalid payload") from None
    if set(params) != {"name", "label"}:
        raise _missing_key(st, sorted({"name", "label"} - set(params))[0])
    return params


def _missing_key(st: dict[str, Any], key: str) -> ProtocolError:
    return ProtocolError(f"Creation requested without key: {key}" if dev_line(st)
                         else "Missing name or label")


def _validate_name(st: dict[str, Any], name: str) -> None:
    """qubes.vm.validate_name, its checks and messages in order (R4.2: no
    dots, no separate message for the first character)."""
    old = r42(st)
    if len(name) > 31:
        raise ValueErr("VM name must be shorter than 32 characters")
    if not old and re.match(r"[0-9_.-]", name):
        raise ValueErr("VM name cannot start with hyphen, underscore, dot or numbers")
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_-]*" if old else r"[a-zA-Z][a-zA-Z0-9_.-]*",
                        name):
        raise ValueErr("VM name contains illegal characters")
    if name == "Domain-0":
        raise ValueErr("VM name cannot be 'Domain-0'")
    if name in ("none", "default"):
        raise ValueErr("VM name cannot be 'none' nor 'default'")
    if name.endswith("-dm"):
        raise ValueErr("VM name cannot end with -dm")


def _name_free(st: dict[str, Any], name: str) -> None:
    """api/admin.py _vm_create: a taken name (the dev line has its own error)."""
    if name in st["qubes"]:
        if dev_line(st):
            raise AlreadyExists(f"Qube already exists: {name}")
        raise ValueErr(f"VM {name} already exists")


def create_appvm(st: dict[str, Any], c: Call) -> None:
    """admin.vm.Create.AppVM+<template>, payload 'name=N label=L': a halted
    AppVM of that TemplateVM, every property but label and template at its
    default (netvm: the global default_netvm), tag created-by-<src>."""
    if c.dest != "dom0":
        raise PermissionDenied("")
    if not c.arg:
        raise ValueErr("AppVM needs a template")  # AppVM.template has no default
    tpl = get_qube(st, c.arg)
    params = _create_params(st, c)
    name = params["name"]
    _validate_name(st, name)
    label = params["label"]
    if label.isdigit() or not all(ch.isalnum() or ch in "-_." for ch in label):
        raise PermissionDenied("")
    if label not in LABELS:  # the dev line drops an unknown label, then misses it
        raise _missing_key(st, "label") if dev_line(st) else \
            LabelNotFound(f"Label does not exist: {label}")
    _name_free(st, name)
    if tpl["klass"] != "TemplateVM":
        raise ValueErr(f"template of AppVM {name} must be a TemplateVM, not {tpl['klass']}")
    st["qubes"][name] = {"klass": "AppVM", "template": c.arg, "label": label,
                         # qubes/ext/gui.py, audio.py tag it with its guivm/audiovm
                         "features": {}, "tags": sorted({f"created-by-{c.src}",
                                                         "audiovm-dom0", "guivm-dom0"}),
                         "power_state": "Halted", "uuid": _uuid4(), "default_props": [],
                         "netvm_set_count": 0}
    fire(st, "", "domain-add", vm=name)


def create_dispvm(st: dict[str, Any], c: Call) -> None:
    """admin.vm.Create.DispVM+<dvm> with payload 'name=N label=L': a DispVM
    that never comes from the preload queue; auto_cleanup is off."""
    params = _create_params(st, c)
    if st["faults"].get("create_fails"):
        raise QubesdError("Create.DispVM failed (simulated)")
    name = params["name"]
    _validate_name(st, name)
    _name_free(st, name)
    get_qube(st, c.arg)
    q = new_dispvm(st, c.arg, name, unused_dispid(st["qubes"]), auto_cleanup=False)
    q["label"] = params["label"]
    q["default_props"] = [p for p in q["default_props"] if p != "label"] + ["auto_cleanup"]
    add_tags(q, f"created-by-{c.src}")


def start(st: dict[str, Any], c: Call) -> float:
    """Returns the seconds a slow boot still takes (then call boot(slow=True))."""
    q = get_qube(st, c.dest)
    if q["power_state"] != "Halted":
        return 0  # qubesvm.start: not Halted -> nothing to do
    faults = st["faults"]
    if faults.get("start_fails"):
        if not faults.get("start_fails_keeps_qube", True) and q.get("auto_cleanup"):
            del st["qubes"][c.dest]
        raise QubesdError(f"Start failed: {c.dest} (simulated)")
    delay = faults.get("start_delay", 0)
    if delay:
        q["power_state"] = "Transient"  # what qubesd reports while it boots
    else:
        boot(st, c.dest)
    return delay


def kill(st: dict[str, Any], c: Call) -> None:
    q = get_qube(st, c.dest)
    if q["klass"] == "AdminVM":  # adminvm.py kill
        raise VMError("Cannot kill Dom0 fake domain!")
    if q["power_state"] == "Halted":
        raise VMNotStarted(f"Domain is powered off: {c.dest!r}")
    if st["faults"].get("kill_fails", 0) > 0:
        st["faults"]["kill_fails"] -= 1
        raise QubesdError(f"libvirt refused to kill {c.dest} (simulated)")
    halt(st, c.dest, c.processes)


def remove(st: dict[str, Any], c: Call) -> None:
    """admin.vm.Remove: a halted qube that no other qube (nor a global
    property) uses (app.py on_domain_pre_deleted). R4.3 counts only
    properties set explicitly and lets the DVM template of a preloaded
    disposable go; R4.2 counts every value, defaults included."""
    q = get_qube(st, c.dest)
    if q["klass"] == "AdminVM":
        raise VMInUse("'dom0' cannot be removed")
    if q["power_state"] != "Halted":
        raise VMNotHalted(f"Domain is not powered off: {c.dest!r}")
    old = r42(st)
    users = []
    for n, o in st["qubes"].items():
        if n == c.dest:
            continue  # a qube may reference itself
        preload = not old and n in preload_list(st["qubes"].get(
            o.get("template") or "", {"features": {}}))
        for prop in ("template", "netvm", "default_dispvm", "management_dispvm"):
            if prop not in props_of(st, o):
                continue
            is_default, value = prop_value(st, n, prop)
            if value == c.dest and (old or not is_default) and not (
                    preload and prop in ("template", "default_dispvm")):
                users.append(f"{n}:{prop}")
    users += [f"@GLOBAL:{k}" for k, v in st.get("globals", {}).items() if v == c.dest]
    if users:  # admin.py vm_remove: the users go to qubesd's log, not the reply
        space = "" if r42(st) else "  "
        raise VMInUse(f"Domain is in use: {c.dest!r};{space}see 'journalctl -u qubesd -e' in "
                      f"dom0 for details")
    del st["qubes"][c.dest]
    st["processes"].pop(c.dest, None)
    fire(st, "", "domain-delete", vm=c.dest)


def current_state(st: dict[str, Any], c: Call) -> str:
    q = get_qube(st, c.dest)
    running = q["power_state"] != "Halted"
    return (f"mem={400 if running else 0} mem_static_max=4000 "
            f"cputime={1 if running else 0} power_state={q['power_state']}")


def events(st: dict[str, Any], c: Call) -> int:
    """admin.Events: the stream starts after the last event so far (the
    server then sends connection-established and what follows)."""
    get_qube(st, c.dest)
    return st.get("event_seq", 0)


METHODS: dict[str, Callable[[dict[str, Any], Call], Any]] = {
    "admin.vm.List": vm_list,
    "admin.vm.property.Get": property_get,
    "admin.vm.property.GetAll": property_get_all,
    "admin.vm.property.List": property_list,
    "admin.vm.property.Set": property_set,
    "admin.vm.property.Reset": property_reset,
    "admin.vm.feature.Get": feature_get,
    "admin.vm.feature.CheckWithTemplate": feature_check_with_template,
    "admin.vm.feature.Set": feature_set,
    "admin.vm.feature.Remove": feature_remove,
    "admin.vm.tag.List": tag_list,
    "admin.vm.tag.Get": tag_get,
    "admin.vm.tag.Set": tag_set,
    "admin.vm.CreateDisposable": create_disposable,
    "admin.vm.Create.AppVM": create_appvm,
    "admin.vm.Create.DispVM": create_dispvm,
    "admin.vm.Start": start,
    "admin.vm.Kill": kill,
    "admin.vm.Remove": remove,
    "admin.vm.CurrentState": current_state,
    "admin.Events": events,
}


def call(st: dict[str, Any], c: Call) -> Any:
    """Apply one Admin API call to the state (the caller holds the lock and
    logs it). Unknown methods are refused as qubesd's policy would."""
    if st["faults"].get("qubesd_unreachable"):
        raise Unreachable("qubesd is not reachable (simulated)")
    if c.method in (st["faults"].get("qubesd_refuses") or ()):
        raise PermissionDenied("")
    method = METHODS.get(c.method)
    if method is None:
        raise QubesdError(f"method {c.method} is not simulated")
    tick(st, c.now, c.processes)
    return method(st, c)
