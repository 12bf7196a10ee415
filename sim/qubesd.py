"""The simulated qubesd: Admin API methods as functions on the sim state.

One model serves both ways in: SimBackend calls `call()` directly (no
qubesadmin needed, so `make demo` runs on a fresh clone) and the socket server
(qubesd_server.py) calls it for the real qubesadmin library. `call()` returns
exactly the text qubesd would send after `0\\0`, or raises a QubesdError whose
`qubesd_class` is the exception class qubesd would name in its `2\\0` frame.

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

import os
import time
from collections.abc import Callable
from typing import Any

from whonix_open.dom0.backend import BackendError, NoSuchQube, NotRunning

PRELOAD_DEFAULT_DELAY = 3.0      # dvmtemplate.get_feat_preload_delay
OUTDATED_REFRESH_DELAY = 30.0    # dvmtemplate.on_dvmtemplate_property_changed
EVENTS_KEPT = 1000
# dispvm.PRELOAD_OUTDATED_IGNORED_PROPERTIES (the part the sim models)
PRELOAD_IGNORED = {"default_dispvm", "dispid", "name", "template", "template_for_dispvms",
                   "uuid", "auto_cleanup", "management_dispvm", "klass", "xid"}


class QubesdError(BackendError):
    qubesd_class = "QubesException"


class VMNotFound(QubesdError, NoSuchQube):
    qubesd_class = "QubesVMNotFoundError"


class VMNotStarted(QubesdError, NotRunning):
    qubesd_class = "QubesVMNotStartedError"


class VMNotHalted(QubesdError):
    qubesd_class = "QubesVMNotHaltedError"


class VMInUse(QubesdError):
    qubesd_class = "QubesVMInUseError"


class ValueErr(QubesdError):
    qubesd_class = "QubesValueError"


class NoSuchProperty(QubesdError):
    qubesd_class = "QubesNoSuchPropertyError"


class FeatureNotFound(QubesdError):
    qubesd_class = "QubesFeatureNotFoundError"


class AlreadyExists(QubesdError):
    qubesd_class = "QubesVMAlreadyExistsError"


class ProtocolError(QubesdError):
    qubesd_class = "ProtocolError"


class PermissionDenied(QubesdError):
    qubesd_class = "PermissionDenied"  # qrexec/admin policy said no (empty message)


class Unreachable(QubesdError):
    """Not a qubesd reply: the sim's qubesd_unreachable fault (the socket
    server then refuses connections)."""


def _uuid4() -> str:
    """A random UUID as text (without importing uuid: service start time)."""
    b = bytearray(os.urandom(16))
    b[6], b[8] = (b[6] & 0x0F) | 0x40, (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- properties ----------------------------------------------------------

# name -> (type on the wire, classes that have it)
_ALL = ("AdminVM", "TemplateVM", "AppVM", "DispVM", "StandaloneVM")
_VMS = ("TemplateVM", "AppVM", "DispVM", "StandaloneVM")
PROPERTIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "name": ("str", _ALL),
    "klass": ("str", _ALL),  # stateless properties (qubes.stateless_property):
    "xid": ("int", _ALL),    # read-only, always default=True
    "uuid": ("str", _ALL),
    "label": ("label", _ALL),
    "default_dispvm": ("vm", _ALL),
    "management_dispvm": ("vm", _VMS),
    "guivm": ("vm", _VMS),
    "audiovm": ("vm", _VMS),
    "template": ("vm", ("AppVM", "DispVM")),
    "netvm": ("vm", _VMS),
    "provides_network": ("bool", _VMS),
    "qrexec_timeout": ("int", _VMS),
    "template_for_dispvms": ("bool", ("AppVM", "StandaloneVM")),
    "auto_cleanup": ("bool", ("DispVM",)),
    "dispid": ("int", ("DispVM",)),
}
# Stored as set by a scenario or the API: these read as not default.
_STORED = ("label", "default_dispvm", "management_dispvm", "template", "netvm",
           "provides_network", "qrexec_timeout", "template_for_dispvms", "auto_cleanup")


def _qube(st: dict[str, Any], name: str) -> dict[str, Any]:
    q = st["qubes"].get(name)
    if q is None:
        raise VMNotFound(name)
    return q


def _has(q: dict[str, Any], prop: str) -> bool:
    return prop in PROPERTIES and q["klass"] in PROPERTIES[prop][1]


def _default(st: dict[str, Any], name: str, q: dict[str, Any], prop: str) -> Any:
    """qubesd's default of *prop* (qubes/vm/*.py property defaults)."""
    glob = st.get("globals", {})
    if prop == "default_dispvm":  # a DispVM's defaults to its template (dispvm.py)
        return q.get("template") if q["klass"] == "DispVM" else glob.get("default_dispvm")
    if prop == "management_dispvm":  # qubesvm: _default_with_template, then global
        tpl = q.get("template")
        if tpl in st["qubes"] and _has(st["qubes"][tpl], prop):
            return prop_value(st, tpl, prop)[1]
        return glob.get("management_dispvm")
    if prop == "netvm":
        return None if q.get("provides_network") else glob.get("default_netvm")
    if prop in ("guivm", "audiovm"):
        return "dom0"
    if prop == "label":
        return "red"
    return {"provides_network": False, "qrexec_timeout": 60, "template_for_dispvms": False,
            "auto_cleanup": False}.get(prop)


def prop_value(st: dict[str, Any], name: str, prop: str) -> tuple[bool, Any]:
    """(is_default, value) of one property, as qubesd computes it."""
    q = _qube(st, name)
    if not _has(q, prop):
        raise NoSuchProperty(f"Invalid property '{prop}' of {name}")
    if prop == "name":
        return False, name
    if prop == "klass":
        return True, _klass(q)
    if prop == "xid":  # qubesvm.xid: the libvirt domain id, -1 when not running
        return True, -1 if q["power_state"] == "Halted" else 10 + q.get("dispid", 0)
    if prop == "uuid":
        return False, q.setdefault("uuid", _uuid4())
    if prop == "dispid":
        return False, q.get("dispid", 0)
    if prop in _STORED and prop not in q.get("default_props", ()) and prop in q:
        value = q[prop]
        if prop in ("netvm", "default_dispvm", "management_dispvm", "template") \
                and value == "":
            value = None
        return False, value
    return True, _default(st, name, q, prop)


def _wire(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "bool":
        return str(bool(value))
    return str(value)


def _serialize(st: dict[str, Any], name: str, prop: str) -> str:
    is_default, value = prop_value(st, name, prop)
    kind = PROPERTIES[prop][0]
    return f"default={is_default} type={kind} {_wire(kind, value)}"


# --- events --------------------------------------------------------------

def fire(st: dict[str, Any], subject: str, event: str, **kwargs: Any) -> None:
    """Record an event as qubesd's admin.Events would send it (values as
    str(); None becomes 'None', as in qubes/api/__init__.py send_event).
    subject '' = the app (domain-add, ...)."""
    st["event_seq"] = st.get("event_seq", 0) + 1
    events = st.setdefault("events", [])
    events.append({"n": st["event_seq"], "subject": subject, "event": event,
                   "kwargs": {k: str(v) for k, v in kwargs.items()}})
    del events[:-EVENTS_KEPT]


def events_after(st: dict[str, Any], seq: int, dest: str) -> list[dict[str, Any]]:
    """Events after *seq* an admin.Events on *dest* gets: dom0 gets all, a
    qube only its own (admin.py events)."""
    return [e for e in st.get("events", []) if e["n"] > seq
            and (dest == "dom0" or e["subject"] == dest)]


def _set_stored(st: dict[str, Any], name: str, prop: str, value: Any) -> None:
    q = st["qubes"][name]
    had_default, old = prop_value(st, name, prop)
    defaults = q.setdefault("default_props", [])
    if prop in defaults:
        defaults.remove(prop)
    q[prop] = value
    if had_default:  # property.__set__: no oldvalue when it was the default
        fire(st, name, f"property-set:{prop}", name=prop, newvalue=value)
    else:
        fire(st, name, f"property-set:{prop}", name=prop, newvalue=value, oldvalue=old)


def _reset_stored(st: dict[str, Any], name: str, prop: str) -> None:
    q = st["qubes"][name]
    _, old = prop_value(st, name, prop)
    defaults = q.setdefault("default_props", [])
    if prop not in defaults:
        defaults.append(prop)
    fire(st, name, f"property-reset:{prop}", name=prop, oldvalue=old)
    fire(st, name, f"property-del:{prop}", name=prop, oldvalue=old)  # deprecated twin


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
    _dvm_changed(st, name, now, None)


def admin_feature_set(st: dict[str, Any], name: str, key: str, now: float | None = None) -> None:
    """After a feature change outside the Admin API: a new preload-dispvm-max
    fills the queue at once (dvmtemplate: domain-feature-set handlers)."""
    if key.startswith("preload-dispvm-max"):
        _schedule_refill(st, name, time.time() if now is None else now, 0)


# --- power ---------------------------------------------------------------

def _start_chain(st: dict[str, Any], name: str) -> None:
    """Start the netvm chain (qubesd starts a qube's netvm first)."""
    seen = {name}
    _, net = prop_value(st, name, "netvm")
    while net is not None and net not in seen and net in st["qubes"]:
        seen.add(net)
        nq = st["qubes"][net]
        if nq["power_state"] == "Halted":
            nq["power_state"] = "Running"
            fire(st, net, "domain-start")
        net = prop_value(st, net, "netvm")[1] if _has(nq, "netvm") else None


def boot(st: dict[str, Any], name: str, slow: bool = False) -> None:
    """The end of a Start (at once, or after the start_delay fault)."""
    q = _qube(st, name)
    if slow and q["power_state"] != "Transient":
        raise QubesdError(f"{name} was stopped while it was starting")
    _start_chain(st, name)
    q["power_state"] = "Running"
    # What it booted with (the tests' proof of "set before the first start").
    q["booted_with"] = {p: prop_value(st, name, p)[1] for p in ("netvm", "default_dispvm")
                        if _has(q, p)}
    fire(st, name, "domain-start")


def _halt(st: dict[str, Any], name: str, processes: Callable[[list], None] | None) -> None:
    q = st["qubes"][name]
    if processes is not None:
        processes(st["processes"].pop(name, []))
    q["power_state"] = "Halted"
    fire(st, name, "domain-shutdown")
    if q["klass"] == "DispVM":
        _drop_preload(st, name)
        if q.get("auto_cleanup"):  # dispvm.on_domain_shutdown -> _auto_cleanup
            del st["qubes"][name]
            fire(st, "", "domain-delete", vm=name)


# --- preloaded disposables -------------------------------------------------

def _feature(q: dict[str, Any], key: str) -> str | None:
    return q["features"].get(key)


def preload_list(q: dict[str, Any]) -> list[str]:
    return (_feature(q, "preload-dispvm") or "").split()


def _set_preload_list(st: dict[str, Any], dvm: str, names: list[str]) -> None:
    st["qubes"][dvm]["features"]["preload-dispvm"] = " ".join(names)


def _preload_max(q: dict[str, Any]) -> int:
    try:
        return max(0, int(_feature(q, "preload-dispvm-max") or 0))
    except ValueError:
        return 0


def _preload_delay(st: dict[str, Any], q: dict[str, Any]) -> float:
    value = _feature(q, "preload-dispvm-delay")
    if value is None:  # check_with_adminvm
        value = st["qubes"].get("dom0", {"features": {}})["features"].get(
            "preload-dispvm-delay")
    try:
        return float(value) if value is not None else PRELOAD_DEFAULT_DELAY
    except ValueError:
        return PRELOAD_DEFAULT_DELAY


def _drop_preload(st: dict[str, Any], name: str) -> None:
    q = st["qubes"].get(name)
    dvm = q and q.get("template")
    if dvm in st["qubes"]:
        names = preload_list(st["qubes"][dvm])
        if name in names:
            names.remove(name)
            _set_preload_list(st, dvm, names)


def _outdated(st: dict[str, Any], disp: str, dvm: str) -> list[str]:
    """dispvm.is_preload_outdated, for the properties the sim models."""
    return [p for p in PROPERTIES if p not in PRELOAD_IGNORED and p not in ("label",)
            and _has(st["qubes"][disp], p) and _has(st["qubes"][dvm], p)
            and prop_value(st, disp, p)[1] != prop_value(st, dvm, p)[1]]


def _discard(st: dict[str, Any], disp: str, now: float, processes: Any) -> None:
    """Remove an outdated preload from the list and clean it up."""
    _drop_preload(st, disp)
    q = st["qubes"][disp]
    if q["power_state"] != "Halted":
        _halt(st, disp, processes)
    if disp in st["qubes"]:
        del st["qubes"][disp]
        fire(st, "", "domain-delete", vm=disp)


def tick(st: dict[str, Any], now: float, processes: Any = None) -> None:
    """What qubesd's event loop would have done by *now*: refill preload
    queues whose refill time has come (boot new preloads, paused when done)."""
    for dvm, q in list(st["qubes"].items()):
        if not q.get("template_for_dispvms") or _preload_max(q) == 0:
            continue
        due = q.get("preload_refill_at", 0)
        if due > now:
            continue
        q.pop("preload_refill_at", None)
        while len(preload_list(q)) < _preload_max(q):
            disp = _new_disposable(st, dvm, "dom0")
            names = preload_list(q)
            _set_preload_list(st, dvm, [*names, disp])
            dq = st["qubes"][disp]
            dq["features"].update({"preload-dispvm-in-progress": "1", "internal": "1"})
            boot(st, disp)
            # on_domain_started_dispvm: completed, then paused until requested
            dq["features"].update({"preload-dispvm-completed": "1",
                                   "preload-dispvm-in-progress": ""})
            dq["power_state"] = "Paused"
            fire(st, disp, "domain-paused")


def _schedule_refill(st: dict[str, Any], dvm: str, now: float, delay: float) -> None:
    q = st["qubes"][dvm]
    due = now + delay
    q["preload_refill_at"] = min(q.get("preload_refill_at", due), due)


def _dvm_changed(st: dict[str, Any], dvm: str, now: float, processes: Any) -> None:
    """on_dvmtemplate_property_changed -> refresh_outdated_preload(delay=30)."""
    q = st["qubes"][dvm]
    if not q.get("template_for_dispvms"):
        return
    outdated = [d for d in preload_list(q) if d in st["qubes"] and _outdated(st, d, dvm)]
    for disp in outdated:
        _discard(st, disp, now, processes)
    if outdated:
        _schedule_refill(st, dvm, now, OUTDATED_REFRESH_DELAY)


def _request_preload(st: dict[str, Any], dvm: str, now: float, processes: Any) -> str | None:
    """dvmtemplate.request_preload + dispvm.get_preload/use_preload."""
    q = st["qubes"][dvm]
    for disp in preload_list(q):
        if disp not in st["qubes"]:
            _drop_preload(st, disp)
            continue
        if _outdated(st, disp, dvm):
            _discard(st, disp, now, processes)
            continue
        _drop_preload(st, disp)
        dq = st["qubes"][disp]
        if dq["power_state"] == "Paused":
            dq["power_state"] = "Running"
            fire(st, disp, "domain-unpaused")
        if not _feature(q, "internal"):
            dq["features"].pop("internal", None)
        dq["features"].pop("deferred-netvm-original", None)  # apply_deferred_netvm
        dq["features"].pop("preload-dispvm-in-progress", None)
        delay = _preload_delay(st, q)
        if not (delay < 0 and preload_list(q)):
            _schedule_refill(st, dvm, now, max(delay, 0))
        return disp
    return None


def _unused_disp_name(qubes: dict[str, Any]) -> tuple[str, int]:
    for _ in range(64):  # the common case: a random id is free
        dispid = int.from_bytes(os.urandom(4), "little") % 9999 + 1
        if f"disp{dispid}" not in qubes:
            return f"disp{dispid}", dispid
    free = [n for n in range(1, 10000) if f"disp{n}" not in qubes]
    if not free:
        raise QubesdError("no free disposable id")
    dispid = free[int.from_bytes(os.urandom(4), "little") % len(free)]
    return f"disp{dispid}", dispid


def _unused_dispid(qubes: dict[str, Any]) -> int:
    """app.get_new_unused_dispid: unused among dispids (not names)."""
    used = {q.get("dispid") for q in qubes.values()}
    while True:
        dispid = int.from_bytes(os.urandom(4), "little") % 9999 + 1
        if dispid not in used:
            return dispid


def _new_dispvm(st: dict[str, Any], dvm: str, name: str, dispid: int,
                auto_cleanup: bool) -> dict[str, Any]:
    """DispVM.__init__ with a template: explicitly set properties of the DVM
    are cloned (clone_properties copies set values only), features except
    preload-dispvm* and tags are copied."""
    tpl = st["qubes"][dvm]
    if not tpl.get("template_for_dispvms"):
        raise ValueErr(f"template for disposable ({dvm}) needs to be an AppVM with "
                       f"template_for_dispvms=True")
    q: dict[str, Any] = {"klass": "DispVM", "template": dvm, "dispid": dispid,
                         "auto_cleanup": auto_cleanup, "template_for_dispvms": False,
                         "features": {k: v for k, v in tpl["features"].items()
                                      if not k.startswith("preload-dispvm")},
                         "tags": sorted(set(tpl["tags"])), "power_state": "Halted",
                         "uuid": _uuid4(), "default_props": [],
                         "netvm_set_count": 0}
    for prop in ("label", "netvm", "qrexec_timeout", "provides_network", "management_dispvm"):
        is_default, value = (True, None) if prop not in tpl else prop_value(st, dvm, prop)
        if is_default:
            q["default_props"].append(prop)
        else:
            q[prop] = value
    q["default_props"].append("default_dispvm")  # -> the template
    st["qubes"][name] = q
    fire(st, "", "domain-add", vm=name)
    return q


def _new_disposable(st: dict[str, Any], dvm: str, src: str) -> str:
    """DispVM.gen_disposable: auto_cleanup on, plus the sim's fault knobs."""
    faults = st["faults"]
    if faults.get("create_fails"):
        raise QubesdError("CreateDisposable failed (simulated)")
    name, dispid = _unused_disp_name(st["qubes"])
    q = _new_dispvm(st, dvm, name, dispid, auto_cleanup=True)
    if faults.get("no_auto_cleanup"):
        q["auto_cleanup"] = False  # for real: a kill then leaves it behind
    fake: dict[str, str] = {}
    if faults.get("wrong_klass"):
        fake["klass"] = "AppVM"
    wrong = faults.get("wrong_template")
    if wrong:
        fake["template"] = wrong if isinstance(wrong, str) else st["qubes"][dvm]["template"]
    if fake:
        q["reads_back_as"] = fake
    return name


# --- the Admin API methods ---------------------------------------------------

class Call:
    """One Admin API call: method, source, destination, argument, payload."""

    def __init__(self, method: str, src: str, dest: str, arg: str = "",
                 payload: bytes = b"", now: float | None = None,
                 processes: Callable[[list], None] | None = None) -> None:
        self.method, self.src, self.dest, self.arg, self.payload = method, src, dest, arg, payload
        self.now = time.time() if now is None else now
        self.processes = processes  # kills a halted qube's processes


def _klass(q: dict[str, Any]) -> str:
    return q.get("reads_back_as", {}).get("klass", q["klass"])


def _list_line(st: dict[str, Any], name: str) -> str:
    q = st["qubes"][name]
    return (f"{name} class={_klass(q)} state={q['power_state']} "
            f"uuid={prop_value(st, name, 'uuid')[1]}\n")


def vm_list(st: dict[str, Any], c: Call) -> str:
    _qube(st, c.dest)
    names = sorted(st["qubes"]) if c.dest == "dom0" else [c.dest]
    return "".join(_list_line(st, n) for n in names)


def property_get(st: dict[str, Any], c: Call) -> str:
    value = _serialize(st, c.dest, c.arg)
    fake = _qube(st, c.dest).get("reads_back_as", {})
    if c.arg == "template" and "template" in fake:
        value = f"default=False type=vm {fake['template']}"
    return value


def property_get_all(st: dict[str, Any], c: Call) -> str:
    q = _qube(st, c.dest)
    out = []
    for prop in sorted(p for p in PROPERTIES if _has(q, p)):
        c2 = Call(c.method, c.src, c.dest, prop)
        value = property_get(st, c2).replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"{prop} {value}\n")
    return "".join(out)


def property_set(st: dict[str, Any], c: Call) -> None:
    q = _qube(st, c.dest)
    if not _has(q, c.arg):
        raise NoSuchProperty(f"Invalid property '{c.arg}' of {c.dest}")
    try:
        text = c.payload.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("non-ASCII value") from None
    kind = PROPERTIES[c.arg][0]
    if c.arg not in _STORED:
        raise QubesdError(f"property {c.arg} is read-only here")
    value: Any
    if kind == "vm":
        value = text or None
        if value is not None:
            _qube(st, value)
    elif kind == "bool":
        if text.lower() not in ("true", "false", "1", "0", "on", "off", "yes", "no", ""):
            raise ValueErr(f"invalid bool {text!r}")
        value = text.lower() in ("true", "1", "on", "yes")
    elif kind == "int":
        try:
            value = int(text)
        except ValueError:
            raise ValueErr(f"invalid int {text!r}") from None
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
    if c.arg == "default_dispvm":
        if value is not None and not st["qubes"][value].get("template_for_dispvms"):
            raise ValueErr(f"{value} is not a disposable template")
        if st["faults"].get("default_dispvm_set_ignored"):
            return
    _set_stored(st, c.dest, c.arg, value)
    _dvm_changed(st, c.dest, c.now, c.processes)


def _check_netvm(st: dict[str, Any], name: str, q: dict[str, Any], netvm: str | None) -> None:
    if netvm is None:
        return
    nq = st["qubes"][netvm]
    if netvm == name or not nq.get("provides_network"):
        raise ValueErr(f"netvm {netvm} does not provide network")
    if q["power_state"] != "Halted" and nq["power_state"] != "Running":
        raise VMNotStarted(f"Cannot dynamically attach to stopped qube {netvm}")


def property_reset(st: dict[str, Any], c: Call) -> None:
    q = _qube(st, c.dest)
    if not _has(q, c.arg) or c.arg not in _STORED:
        raise NoSuchProperty(f"Invalid property '{c.arg}' of {c.dest}")
    if c.arg == "template":
        raise ValueErr("Cannot unset template")
    _reset_stored(st, c.dest, c.arg)
    _dvm_changed(st, c.dest, c.now, c.processes)


def feature_get(st: dict[str, Any], c: Call) -> str:
    value = _qube(st, c.dest)["features"].get(c.arg)
    if value is None:
        raise FeatureNotFound(f"{c.dest}: feature {c.arg}")
    return value


def feature_check_with_template(st: dict[str, Any], c: Call) -> str:
    q = _qube(st, c.dest)
    while True:
        if c.arg in q["features"]:
            return q["features"][c.arg]
        if not q.get("template"):
            raise FeatureNotFound(f"{c.dest}: feature {c.arg}")
        q = st["qubes"][q["template"]]


def feature_set(st: dict[str, Any], c: Call) -> None:
    q = _qube(st, c.dest)
    try:
        value = c.payload.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("Feature value contains non-ASCII characters") from None
    q["features"][c.arg] = value
    fire(st, c.dest, f"domain-feature-set:{c.arg}", feature=c.arg, value=value)
    if c.arg.startswith("preload-dispvm-max"):
        _schedule_refill(st, c.dest, c.now, 0)


def tag_list(st: dict[str, Any], c: Call) -> str:
    return "".join(f"{t}\n" for t in sorted(_qube(st, c.dest)["tags"]))


def tag_get(st: dict[str, Any], c: Call) -> str:
    return "1" if c.arg in _qube(st, c.dest)["tags"] else "0"


def tag_set(st: dict[str, Any], c: Call) -> None:
    q = _qube(st, c.dest)
    if not c.arg or not all(ch.isalnum() or ch in "_-" for ch in c.arg):
        raise ValueErr("Invalid tag name")
    if c.arg not in q["tags"]:
        _add_tags(q, c.arg)
        fire(st, c.dest, f"domain-tag-add:{c.arg}", tag=c.arg)


def _add_tags(q: dict[str, Any], *tags: str) -> None:
    q["tags"] = sorted({*q["tags"], *tags})


def create_disposable(st: dict[str, Any], c: Call) -> str:
    if c.arg not in ("", "preload"):
        raise ProtocolError("Invalid argument")
    if c.payload not in (b"", b"uuid"):
        raise ProtocolError("Invalid payload, expected empty string or 'uuid'")
    src = _qube(st, c.src) if c.src in st["qubes"] else None
    dvm = (prop_value(st, c.src, "default_dispvm")[1] if src else None) \
        if c.dest == "dom0" else c.dest
    if dvm is None:
        raise QubesdError("no default_dispvm")
    tpl = _qube(st, dvm)
    if not tpl.get("template_for_dispvms"):
        raise QubesdError("Refusing to create disposable out of app qube which has "
                          "template_for_dispvms=False")
    if c.arg == "preload":
        _schedule_refill(st, dvm, c.now, 0)
        return ""
    name = _request_preload(st, dvm, c.now, c.processes) or _new_disposable(st, dvm, c.src)
    _add_tags(st["qubes"][name], f"created-by-{c.src}", f"disp-created-by-{c.src}")
    return f"uuid:{prop_value(st, name, 'uuid')[1]}" if c.payload else name


def create_dispvm(st: dict[str, Any], c: Call) -> None:
    """admin.vm.Create.DispVM+<dvm> with payload 'name=N label=L': a DispVM
    that never comes from the preload queue; auto_cleanup is off."""
    params: dict[str, str] = {}
    try:
        for item in c.payload.decode("ascii").split(" "):
            key, value = item.split("=", 1)
            if key in params or key not in ("name", "label"):
                raise ProtocolError("Options does not match: name, label")
            params[key] = value
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("Invalid payload") from None
    if set(params) != {"name", "label"}:
        raise ProtocolError("Creation requested without key: name/label")
    if st["faults"].get("create_fails"):
        raise QubesdError("Create.DispVM failed (simulated)")
    name = params["name"]
    if not name[:1].isalpha() or name in ("none", "default"):
        raise ValueErr("VM name contains illegal characters")
    if name in st["qubes"]:
        raise AlreadyExists(f"Qube already exists: {name}")
    _qube(st, c.arg)
    q = _new_dispvm(st, c.arg, name, _unused_dispid(st["qubes"]), auto_cleanup=False)
    q["label"] = params["label"]
    q["default_props"] = [p for p in q["default_props"] if p != "label"]
    _add_tags(q, f"created-by-{c.src}")


def start(st: dict[str, Any], c: Call) -> float:
    """Returns the seconds a slow boot still takes (then call boot(slow=True))."""
    q = _qube(st, c.dest)
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
    q = _qube(st, c.dest)
    if q["klass"] == "AdminVM":
        raise QubesdError("dom0 cannot be killed")
    if q["power_state"] == "Halted":
        raise VMNotStarted(f"Domain is powered off: {c.dest}")
    if st["faults"].get("kill_fails", 0) > 0:
        st["faults"]["kill_fails"] -= 1
        raise QubesdError(f"libvirt refused to kill {c.dest} (simulated)")
    _halt(st, c.dest, c.processes)


def remove(st: dict[str, Any], c: Call) -> None:
    q = _qube(st, c.dest)
    if q["klass"] == "AdminVM":
        raise VMInUse("'dom0' cannot be removed")
    if q["power_state"] != "Halted":
        raise VMNotHalted(f"{c.dest} is not halted")
    users = sorted(n for n, o in st["qubes"].items() if n != c.dest and c.dest in
                   (o.get("template"), o.get("netvm"), o.get("default_dispvm")))
    if users:
        raise VMInUse(f"{c.dest} is in use by {', '.join(users)}")
    del st["qubes"][c.dest]
    st["processes"].pop(c.dest, None)
    fire(st, "", "domain-delete", vm=c.dest)


def current_state(st: dict[str, Any], c: Call) -> str:
    q = _qube(st, c.dest)
    running = q["power_state"] != "Halted"
    return (f"mem={400 if running else 0} mem_static_max=4000 "
            f"cputime={1 if running else 0} power_state={q['power_state']}")


def events(st: dict[str, Any], c: Call) -> int:
    """admin.Events: the stream starts after the last event so far (the
    server then sends connection-established and what follows)."""
    _qube(st, c.dest)
    return st.get("event_seq", 0)


METHODS: dict[str, Callable[[dict[str, Any], Call], Any]] = {
    "admin.vm.List": vm_list,
    "admin.vm.property.Get": property_get,
    "admin.vm.property.GetAll": property_get_all,
    "admin.vm.property.Set": property_set,
    "admin.vm.property.Reset": property_reset,
    "admin.vm.feature.Get": feature_get,
    "admin.vm.feature.CheckWithTemplate": feature_check_with_template,
    "admin.vm.feature.Set": feature_set,
    "admin.vm.tag.List": tag_list,
    "admin.vm.tag.Get": tag_get,
    "admin.vm.tag.Set": tag_set,
    "admin.vm.CreateDisposable": create_disposable,
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
