"""R4.3 preloaded disposables in the simulated qubesd (qubes/vm/dispvm.py,
qubes/vm/mix/dvmtemplate.py, qubes/vm/mix/net.py; docs/QUBES-FACTS.md): the
finite queue (feature preload-dispvm-max, list in feature preload-dispvm),
refilled by booting new preloads after preload-dispvm-delay, outdated
preloads discarded, a deferred netvm applied when one is handed out."""

from __future__ import annotations

from typing import Any

from whonix_open.sim.qubes_objects import (
    PROPERTIES,
    boot,
    drop_preload,
    fire,
    halt,
    new_disposable,
    own_feature,
    preload_list,
    prop_value,
    props_of,
    set_preload_list,
)

PRELOAD_DEFAULT_DELAY = 3.0      # dvmtemplate.get_feat_preload_delay
OUTDATED_REFRESH_DELAY = 30.0    # dvmtemplate.on_dvmtemplate_property_changed
# dispvm.PRELOAD_OUTDATED_IGNORED_PROPERTIES (the part the sim models)
PRELOAD_IGNORED = {"default_dispvm", "dispid", "name", "template", "template_for_dispvms",
                   "uuid", "auto_cleanup", "management_dispvm", "klass", "xid"}


def _preload_max(q: dict[str, Any]) -> int:
    try:
        return max(0, int(own_feature(q, "preload-dispvm-max") or 0))
    except ValueError:
        return 0


def _preload_delay(st: dict[str, Any], q: dict[str, Any]) -> float:
    value = own_feature(q, "preload-dispvm-delay")
    if value is None:  # check_with_adminvm
        value = st["qubes"].get("dom0", {"features": {}})["features"].get(
            "preload-dispvm-delay")
    try:
        return float(value) if value is not None else PRELOAD_DEFAULT_DELAY
    except ValueError:
        return PRELOAD_DEFAULT_DELAY


def _outdated(st: dict[str, Any], disp: str, dvm: str) -> list[str]:
    """dispvm.is_preload_outdated, for the properties the sim models."""
    common = set(props_of(st, st["qubes"][disp])) & set(props_of(st, st["qubes"][dvm]))
    return [p for p in PROPERTIES if p not in PRELOAD_IGNORED and p not in ("label",)
            and p in common and prop_value(st, disp, p)[1] != prop_value(st, dvm, p)[1]]


def _discard(st: dict[str, Any], disp: str, now: float, processes: Any) -> None:
    """Remove an outdated preload from the list and clean it up."""
    drop_preload(st, disp)
    q = st["qubes"][disp]
    if q["power_state"] != "Halted":
        halt(st, disp, processes)
    if disp in st["qubes"]:
        del st["qubes"][disp]
        fire(st, "", "domain-delete", vm=disp)


def tick(st: dict[str, Any], now: float, processes: Any = None) -> None:
    """What qubesd's event loop would have done by *now*: refill preload
    queues whose refill time has come (boot new preloads, paused when done).
    R4.2 has no preloads."""
    if st.get("release") == "4.2":
        return
    for dvm, q in list(st["qubes"].items()):
        if not q.get("template_for_dispvms") or _preload_max(q) == 0:
            continue
        due = q.get("preload_refill_at", 0)
        if due > now:
            continue
        q.pop("preload_refill_at", None)
        while len(preload_list(q)) < _preload_max(q):
            disp = new_disposable(st, dvm, "dom0")
            names = preload_list(q)
            set_preload_list(st, dvm, [*names, disp])
            dq = st["qubes"][disp]
            dq["features"].update({"preload-dispvm-in-progress": "1", "internal": "1"})
            boot(st, disp)
            # on_domain_started_dispvm: completed, then paused until requested
            dq["features"].update({"preload-dispvm-completed": "1",
                                   "preload-dispvm-in-progress": ""})
            dq["power_state"] = "Paused"
            fire(st, disp, "domain-paused")


def schedule_refill(st: dict[str, Any], dvm: str, now: float, delay: float) -> None:
    q = st["qubes"][dvm]
    due = now + delay
    q["preload_refill_at"] = min(q.get("preload_refill_at", due), due)


def dvm_changed(st: dict[str, Any], dvm: str, now: float, processes: Any) -> None:
    """on_dvmtemplate_property_changed -> refresh_outdated_preload(delay=30)."""
    q = st["qubes"][dvm]
    if not q.get("template_for_dispvms"):
        return
    outdated = [d for d in preload_list(q) if d in st["qubes"] and _outdated(st, d, dvm)]
    for disp in outdated:
        _discard(st, disp, now, processes)
    if outdated:
        schedule_refill(st, dvm, now, OUTDATED_REFRESH_DELAY)


def request_preload(st: dict[str, Any], dvm: str, now: float, processes: Any) -> str | None:
    """dvmtemplate.request_preload + dispvm.get_preload/use_preload."""
    q = st["qubes"][dvm]
    for disp in preload_list(q):
        if disp not in st["qubes"]:
            drop_preload(st, disp)
            continue
        if _outdated(st, disp, dvm):
            _discard(st, disp, now, processes)
            continue
        drop_preload(st, disp)
        dq = st["qubes"][disp]
        if dq["power_state"] == "Paused":
            dq["power_state"] = "Running"
            fire(st, disp, "domain-unpaused")
        if not own_feature(q, "internal"):
            dq["features"].pop("internal", None)
        # apply_deferred_netvm (qubes/vm/mix/net.py): too early while the new
        # netvm is not running - the feature stays, the old device with it
        netvm = st["qubes"].get(dq.get("netvm") or "")
        if netvm is None or netvm["power_state"] != "Halted":
            dq["features"].pop("deferred-netvm-original", None)
        dq["features"].pop("preload-dispvm-in-progress", None)
        delay = _preload_delay(st, q)
        if not (delay < 0 and preload_list(q)):
            schedule_refill(st, dvm, now, max(delay, 0))
        return disp
    return None




def remove_excess(st: dict[str, Any], dvm: str, now: float, processes: Any) -> None:
    """dvmtemplate.remove_preload_excess(0) after preload-dispvm-max was
    deleted: every preload is cleaned up (killed; auto_cleanup removes it).
    qubesd does it in a task right after the call, the sim at once."""
    for disp in preload_list(st["qubes"][dvm]):
        if disp in st["qubes"]:
            _discard(st, disp, now, processes)
        else:
            drop_preload(st, disp)
