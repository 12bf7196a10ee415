"""The qubes the simulated qubesd keeps, below the Admin API: properties and
their defaults, events, power, new DispVMs (sources: see qubesd.py).

Everything here works on the sim state dict (state.py) under its lock."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from whonix_open.dom0.backend import BackendError, NoSuchQube, NotRunning

EVENTS_KEPT = 1000


class QubesdError(BackendError):
    qubesd_class = "QubesException"


class VMNotFound(QubesdError, NoSuchQube):
    qubesd_class = "QubesVMNotFoundError"

    def __init__(self, name: str) -> None:  # qubes/exc.py QubesVMNotFoundError
        super().__init__(f"No such domain: {name!r}")


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


class PropertyValueErr(QubesdError):
    qubesd_class = "QubesPropertyValueError"


class VMError(QubesdError):
    qubesd_class = "QubesVMError"


class FeatureNotFound(QubesdError):
    qubesd_class = "QubesFeatureNotFoundError"


class AlreadyExists(QubesdError):
    qubesd_class = "QubesVMAlreadyExistsError"


class LabelNotFound(QubesdError):
    qubesd_class = "QubesLabelNotFoundError"


class ProtocolError(QubesdError):
    """qubesd answers a malformed call with nothing: it aborts the
    connection (qubes/api/__init__.py, ProtocolError)."""
    qubesd_class = "ProtocolError"


class PermissionDenied(QubesdError):
    qubesd_class = "PermissionDenied"  # qrexec/admin policy said no (empty message)


def r42(st: dict[str, Any]) -> bool:
    """The model answers like R4.2's qubesd (scenario `release`)."""
    return st.get("release") == "4.2"


def dev_line(st: dict[str, Any]) -> bool:
    """The model answers like upstream's development line (4.4)."""
    return st.get("release") == "4.4"


def disposable_word(st: dict[str, Any]) -> str:
    return "DispVM" if r42(st) else "disposable"  # R4.2's messages say DispVM


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
    "xid": ("int", _VMS),    # read-only, always default=True (dom0 has none)
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
    "memory": ("int", _VMS),  # MB at start (QubesVM.DEFAULT_MEMORY); read-only here
    "bootmode": ("str", _VMS),  # R4.3 and later only (qubes/vm/qubesvm.py)
}
# Properties qubesd has only from R4.3 (qubes-core-admin 4.3) on: an R4.2
# qubesd (state "release" 4.2) neither lists nor knows them.
R43_ONLY = ("bootmode",)
LABELS = ("red", "orange", "yellow", "green", "gray", "blue", "purple", "black")
# Stored as set by a scenario or the API: these read as not default.
STORED = ("label", "default_dispvm", "management_dispvm", "template", "netvm",
          "provides_network", "qrexec_timeout", "template_for_dispvms", "auto_cleanup")


def get_qube(st: dict[str, Any], name: str) -> dict[str, Any]:
    q = st["qubes"].get(name)
    if q is None:
        raise VMNotFound(name)
    return q


def has_prop(q: dict[str, Any], prop: str) -> bool:
    return prop in PROPERTIES and q["klass"] in PROPERTIES[prop][1]


def props_of(st: dict[str, Any], q: dict[str, Any]) -> list[str]:
    """The properties this qube has on this release, sorted."""
    return sorted(p for p in PROPERTIES if has_prop(q, p)
                  and not (p in R43_ONLY and r42(st)))


def _default(st: dict[str, Any], name: str, q: dict[str, Any], prop: str) -> Any:
    """qubesd's default of *prop* (qubes/vm/*.py property defaults)."""
    glob = st.get("globals", {})
    if prop == "default_dispvm":  # a DispVM's defaults to its template (dispvm.py)
        return q.get("template") if q["klass"] == "DispVM" else glob.get("default_dispvm")
    if prop == "management_dispvm":  # qubesvm: _default_with_template, then global
        tpl = q.get("template")
        if tpl in st["qubes"] and has_prop(st["qubes"][tpl], prop):
            return prop_value(st, tpl, prop)[1]
        return glob.get("management_dispvm")
    if prop == "netvm":  # templatevm.py: a template's default is none
        if q["klass"] == "TemplateVM" or q.get("provides_network"):
            return None
        return glob.get("default_netvm")
    if prop in ("guivm", "audiovm"):
        return "dom0"
    if prop == "label":
        return "red"
    if prop == "memory":
        return 400
    if prop == "bootmode":
        return "default"
    return {"provides_network": False, "qrexec_timeout": 60, "template_for_dispvms": False,
            "auto_cleanup": False}.get(prop)


def prop_value(st: dict[str, Any], name: str, prop: str) -> tuple[bool, Any]:
    """(is_default, value) of one property, as qubesd computes it."""
    q = get_qube(st, name)
    if prop not in props_of(st, q):
        raise NoSuchProperty(f"Invalid property '{prop}' of {name}")
    if prop == "name":
        return q["klass"] == "AdminVM", name  # adminvm.py: dom0's name is its default
    if prop == "label":  # always given at creation (dom0: black)
        return False, q.get("label") or ("black" if q["klass"] == "AdminVM" else "red")
    if prop == "klass":
        return True, klass_of(q)
    if prop == "xid":  # qubesvm.xid: the libvirt domain id, -1 when not running
        return True, -1 if q["power_state"] == "Halted" else 10 + q.get("dispid", 0)
    if prop == "uuid":  # dom0's is the fixed all-zero default
        if q["klass"] == "AdminVM":
            return True, "00000000-0000-0000-0000-000000000000"
        return False, q.setdefault("uuid", _uuid4())
    if prop == "dispid":
        return False, q.get("dispid", 0)
    if prop in STORED and prop not in q.get("default_props", ()) and prop in q:
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


def serialize(st: dict[str, Any], name: str, prop: str) -> str:
    is_default, value = prop_value(st, name, prop)
    kind = PROPERTIES[prop][0]
    if prop == "xid" and r42(st):
        kind = "str"  # R4.2's qubesd: xid is a plain (str) stateless property
    return f"default={is_default} type={kind} {_wire(kind, value)}"


def klass_of(q: dict[str, Any]) -> str:
    return q.get("reads_back_as", {}).get("klass", q["klass"])


def add_tags(q: dict[str, Any], *tags: str) -> None:
    q["tags"] = sorted({*q["tags"], *tags})


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


def set_stored(st: dict[str, Any], name: str, prop: str, value: Any) -> None:
    q = st["qubes"][name]
    _, old = prop_value(st, name, prop)
    defaults = q.setdefault("default_props", [])
    if prop in defaults:
        defaults.remove(prop)
    q[prop] = value
    # property.__set__ (qubes/__init__.py): oldvalue is what getattr gave,
    # the default included (omitted only for a property without a default)
    fire(st, name, f"property-set:{prop}", name=prop, newvalue=value, oldvalue=old)


def reset_stored(st: dict[str, Any], name: str, prop: str) -> None:
    q = st["qubes"][name]
    _, old = prop_value(st, name, prop)
    defaults = q.setdefault("default_props", [])
    if prop not in defaults:
        defaults.append(prop)
    new = prop_value(st, name, prop)[1]
    if prop == "netvm" and new != old:  # net.py on_property_reset_netvm fires it first
        fire(st, name, "property-set:netvm", name=prop, newvalue=new, oldvalue=old)
    fire(st, name, f"property-reset:{prop}", name=prop, oldvalue=old)
    fire(st, name, f"property-del:{prop}", name=prop, oldvalue=old)  # deprecated twin


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
        net = prop_value(st, net, "netvm")[1] if has_prop(nq, "netvm") else None


def boot(st: dict[str, Any], name: str, slow: bool = False) -> None:
    """The end of a Start (at once, or after the start_delay fault)."""
    q = get_qube(st, name)
    if slow and q["power_state"] != "Transient":
        raise QubesdError(f"{name} was stopped while it was starting")
    _start_chain(st, name)
    q["power_state"] = "Running"
    # What it booted with (the tests' proof of "set before the first start").
    q["booted_with"] = {p: prop_value(st, name, p)[1] for p in ("netvm", "default_dispvm")
                        if has_prop(q, p)}
    fire(st, name, "domain-start")


def halt(st: dict[str, Any], name: str, processes: Callable[[list], None] | None) -> None:
    q = st["qubes"][name]
    if processes is not None:
        processes(st["processes"].pop(name, []))
    q["power_state"] = "Halted"
    fire(st, name, "domain-shutdown")
    if q["klass"] == "DispVM":
        drop_preload(st, name)
        if q.get("auto_cleanup"):  # dispvm.on_domain_shutdown -> _auto_cleanup
            del st["qubes"][name]
            fire(st, "", "domain-delete", vm=name)


# --- the preload list (feature preload-dispvm of the DVM template) ------------

def own_feature(q: dict[str, Any], key: str) -> str | None:
    return q["features"].get(key)


def preload_list(q: dict[str, Any]) -> list[str]:
    return (own_feature(q, "preload-dispvm") or "").split()


def set_preload_list(st: dict[str, Any], dvm: str, names: list[str]) -> None:
    st["qubes"][dvm]["features"]["preload-dispvm"] = " ".join(names)


def drop_preload(st: dict[str, Any], name: str) -> None:
    q = st["qubes"].get(name)
    dvm = q and q.get("template")
    if dvm in st["qubes"]:
        names = preload_list(st["qubes"][dvm])
        if name in names:
            names.remove(name)
            set_preload_list(st, dvm, names)


# --- new DispVMs ------------------------------------------------------------

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


def unused_dispid(qubes: dict[str, Any]) -> int:
    """app.get_new_unused_dispid: unused among dispids (not names)."""
    used = {q.get("dispid") for q in qubes.values()}
    while True:
        dispid = int.from_bytes(os.urandom(4), "little") % 9999 + 1
        if dispid not in used:
            return dispid


def new_dispvm(st: dict[str, Any], dvm: str, name: str, dispid: int,
                auto_cleanup: bool) -> dict[str, Any]:
    """DispVM.__init__ with a template: explicitly set properties of the DVM
    are cloned (clone_properties copies set values only), features except
    preload-dispvm* and tags are copied."""
    tpl = st["qubes"][dvm]
    if not tpl.get("template_for_dispvms"):
        raise ValueErr(f"template for {disposable_word(st)} ({dvm}) needs to be an AppVM "
                       f"with template_for_dispvms=True")
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


def new_disposable(st: dict[str, Any], dvm: str, src: str) -> str:
    """DispVM.gen_disposable: auto_cleanup on, plus the sim's fault knobs."""
    faults = st["faults"]
    if faults.get("create_fails"):
        raise QubesdError("CreateDisposable failed (simulated)")
    name, dispid = _unused_disp_name(st["qubes"])
    q = new_dispvm(st, dvm, name, dispid, auto_cleanup=True)
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
