"""qrexec policy as dom0 evaluates it: the file names qrexec accepts, whether
the whole policy loads, who may call each service and profile, and rules in
files read before the vendor file that decide instead of it."""

from __future__ import annotations

import os
import re
from collections import defaultdict

from whonix_open.contract import (
    RESOLUTION_DEFAULT,
    SERVICE_APP,
    SERVICE_CONVERT,
    SERVICE_OPEN,
    SERVICE_STATUS,
    SERVICE_URL,
    SERVICE_VIEW,
)
from whonix_open.dom0.admin import policy
from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.findings import FAIL, PASS, WARN, Finding, finding
from whonix_open.dom0.disposable import CONTAINED_TAG, MARKER_FEATURE

# What 70-whonix-open.policy denies an opened disposable towards every other
# qube (DESIGN.md, Enforcement 8): every service that carries data out of it,
# stock and Whonix (its disposables carry the DVM template's anon-vm tag).
CONTAINED_SERVICES = ("qubes.Filecopy", "qubes.OpenInVM", "qubes.OpenURL", "qubes.StartApp",
                      "qubes.VMShell", "qubes.VMExec", "qubes.VMExecGUI",
                      "qubes.ClipboardPaste", "qubes.ConnectTCP", "qubes.UpdatesProxy",
                      "whonix.NewStatus", "sdwdate-gui.Connect")
# ... and what no qube may call in it (80-whonix: the gateway into anon-vm).
INBOUND_SERVICES = ("whonix.SdwdateStatus", "whonix.GatewayCommand", "qubes.OpenInVM",
                    "qubes.Filecopy", "qubes.VMShell")
ORDER = {"allow": 0, "ask": 1, "deny": 2}
PROBE = "whonix-open-probe"  # stands for a disposable the broker would open now


def requests(ctx: Context) -> list[tuple[str, str]]:
    """(service, argument) pairs the broker accepts: files with every profile
    (an empty argument is refused with 64, whatever the policy says), links
    with every profile that has a network, apps as APP+PROFILE, conversions
    as RESOLUTION+PROFILE (the default resolution) for every offline profile."""
    if ctx.config is None:
        return [(SERVICE_STATUS, "+")]
    profiles = sorted(ctx.config.profiles.values())
    pairs = [(s, "+" + p.name) for s in (SERVICE_OPEN, SERVICE_VIEW) for p in profiles]
    pairs += [(SERVICE_URL, "+" + p.name) for p in profiles if not p.offline]
    pairs += [(SERVICE_APP, f"+{app}+{p.name}") for app in sorted(ctx.config.apps)
              for p in profiles]
    pairs += [(SERVICE_CONVERT, f"+{RESOLUTION_DEFAULT}+{p.name}") for p in profiles
              if p.offline]
    return [*pairs, (SERVICE_STATUS, "+")]


def sources(ctx: Context) -> list[str]:
    return sorted(q.name for q in ctx.inventory.values()
                  if q.klass != "AdminVM" and q.features.get(MARKER_FEATURE) is None)


def _valid_name(path: str) -> str:
    base = os.path.basename(path).lower()
    base = re.sub(r"[^0-9a-z_.-]", "-", base).lstrip(".")
    return os.path.join(os.path.dirname(path), base if base.endswith(".policy")
                        else base + ".policy")


def _names(names: list[str]) -> str:
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def run(ctx: Context) -> list[Finding]:
    try:
        dirs = list(ctx.policy_dirs) if ctx.policy_dirs else policy.default_dirs()
        bad = policy.bad_file_names(dirs)
    except policy.PolicyUnavailable as e:
        return [finding("policy", WARN, f"policy not checked: {e}")]
    out = [finding("policy", FAIL,
                   f"policy file name {path} is not accepted by qrexec: it refuses every "
                   f"qrexec call in the system until the file is renamed or removed",
                   fix=[f"sudo mv {path} {_valid_name(path)}"]) for path in bad]
    if bad:
        return out
    try:
        loaded = policy.load(dirs)
    except policy.PolicyUnavailable as e:
        return [finding("policy", FAIL, str(e), fix=["sudo qubes-policy-lint"])]
    info = policy.system_info(ctx.inventory)
    vendor_seen = False
    for service, arg in requests(ctx):
        by_result: dict[str, list[str]] = defaultdict(list)
        shadowing: dict[str, list[str]] = defaultdict(list)
        rule_at: dict[str, str] = {}
        for src in sources(ctx):
            d = policy.decide(loaded, info, service, arg, src, "dom0")
            refused = None if d.result == "deny" or service == SERVICE_STATUS \
                else ctx.broker_refuses(service, arg, src)
            by_result[f"refused by the broker ({int(refused)})" if refused
                      else d.result].append(src)
            if d.file == policy.VENDOR_FILE:
                vendor_seen = True
            elif d.file is not None and d.file < policy.VENDOR_FILE \
                    and d.file != policy.USER_FILE and d.where:
                shadowing[d.where].append(src)
                rule_at[d.where] = d.rule or ""
        call = f"{service}{arg}"
        parts = [f"{r}: {_names(names)}" for r, names in sorted(
            by_result.items(), key=lambda item: (item[0] not in ORDER, ORDER.get(item[0], 0),
                                                 item[0]))]
        out.append(finding("policy", PASS, f"{call} -> dom0: " + "; ".join(parts)))
        for where, names in shadowing.items():
            file, line = where.rsplit(":", 1)
            out.append(finding(
                "policy", WARN,
                f"{call} from {_names(names)} is decided by {where} ({rule_at[where]}), "
                f"a file read before {policy.VENDOR_FILE} that is not yours "
                f"({policy.USER_FILE})", names,
                [f"edit /etc/qubes/policy.d/{file} line {line} (a 50-config-* file: "
                 f"Qubes Global Config), or restate the rule in {policy.USER_FILE}"]))
    out += _containment(ctx, loaded, info)
    if not vendor_seen:
        out.append(finding("policy", FAIL, f"no call to the whonix services is decided by "
                           f"{policy.VENDOR_FILE}: is it installed?",
                           fix=["sudo make install-dom0"]))
    return out


def _probes(ctx: Context, info: dict) -> list[str]:
    """The broker's disposables that exist now, and - so that the policy is
    checked before anyone opens a file - one more entry in the system info
    for each Whonix DVM template, as an opened disposable of it looks to
    qrexec: a DispVM with its template's tags, created by dom0, with the
    containment tag and no default_dispvm (what the broker sets)."""
    names = [q.name for q in sorted(ctx.inventory.values())
             if q.klass == "DispVM" and q.features.get(MARKER_FEATURE) is not None
             and CONTAINED_TAG in q.tags]
    for n, dvm in enumerate(ctx.ws_dvms()):
        name = f"{PROBE}-{n}"
        info["domains"][name] = {
            **info["domains"][dvm.name], "name": name, "type": "DispVM",
            "template_for_dispvms": False, "default_dispvm": None, "power_state": "Running",
            "tags": sorted({*dvm.tags, CONTAINED_TAG, "created-by-dom0",
                            "disp-created-by-dom0"}), "uuid": f"00000000-0000-4000-8000-{n:012d}"}
        names.append(name)
    return names


def _containment(ctx: Context, loaded: object, info: dict) -> list[Finding]:
    out = []
    for q in sorted(ctx.inventory.values()):
        if q.klass == "DispVM" and q.features.get(MARKER_FEATURE) is not None \
                and CONTAINED_TAG not in q.tags:
            out.append(finding("containment", FAIL,
                               f"disposable {q.name} of this service lacks the tag "
                               f"{CONTAINED_TAG}: the policy does not contain it", [q.name],
                               [f"qvm-kill {q.name}"]))
    info = {"domains": dict(info["domains"])}
    probes = _probes(ctx, info)
    targets = ["@dispvm", "@default",
               *(f"@dispvm:{d.name}" for d in sorted(ctx.inventory.values())
                 if d.template_for_dispvms),
               *(n for n in sorted(ctx.inventory) if n != "dom0")]
    # (what may happen, the deciding rule) -> the qubes it happens with
    holes: dict[tuple[str, str], list[str]] = defaultdict(list)
    rules: dict[str, str] = {}

    def deny_or_hole(what: str, other: str, d: policy.Decision) -> None:
        if d.result != "deny" and d.where:
            holes[(what, d.where)].append(other)
            rules[d.where] = d.rule or ""

    for probe in probes:
        for service in CONTAINED_SERVICES:
            for target in targets:
                deny_or_hole(f"an opened disposable may call {service} towards", target,
                             policy.decide(loaded, info, service, "+", probe, target))
        for service, arg in requests(ctx):
            deny_or_hole(f"an opened disposable may call {service}{arg} towards", "dom0",
                         policy.decide(loaded, info, service, arg, probe, "dom0"))
        for service in INBOUND_SERVICES:
            for src in sources(ctx):
                deny_or_hole(f"{service} may be called in an opened disposable by", src,
                             policy.decide(loaded, info, service, "+", src, probe))
    for (what, where), hit in sorted(holes.items()):
        file, line = where.rsplit(":", 1)
        out.append(finding(
            "containment", FAIL,
            f"{what} {_names(sorted(set(hit)))}: {where} ({rules[where]}) decides before "
            f"the containment rules of {policy.VENDOR_FILE}", [],
            [f"edit /etc/qubes/policy.d/{file} line {line}: exclude @tag:{CONTAINED_TAG} "
             f"(a deny rule for it before this one)"]))
    if not out and probes:
        out.append(finding("containment", PASS,
                           f"opened disposables may not call the whonix services, nor "
                           f"{', '.join(CONTAINED_SERVICES)} towards any qube; no qube may "
                           f"call {', '.join(INBOUND_SERVICES)} in them"))
    return out
