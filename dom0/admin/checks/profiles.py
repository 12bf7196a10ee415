"""Does every profile resolve, for every calling qube, and which profiles
can use R4.3 preloads? Resolution is the broker's own `make_plan` (through
the same Backend), so check and broker cannot disagree."""

from __future__ import annotations

from collections import defaultdict

from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.findings import FAIL, PASS, WARN, Finding, finding
from whonix_open.dom0.admin.inventory import Qube
from whonix_open.dom0.backend import NoSuchQube, QubeInfo
from whonix_open.dom0.config import Profile
from whonix_open.dom0.disposable import MARKER_FEATURE
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.resolve import Plan, make_plan

PRELOAD_MAX = "preload-dispvm-max"


def callers(ctx: Context) -> dict[tuple, list[Qube]]:
    """Qubes that may call the broker, grouped by what the automatic choice
    depends on (default_dispvm, template, whonix-default-dispvm): one
    resolution per group. The broker's own disposables are refused (72)."""
    groups: dict[tuple, list[Qube]] = defaultdict(list)
    for q in sorted(ctx.inventory.values()):
        if q.klass == "AdminVM" or q.features.get(MARKER_FEATURE) is not None:
            continue
        key = (q.default_dispvm, q.template, q.features.get("whonix-default-dispvm"))
        groups[key].append(q)
    return groups


def _info(q: Qube) -> QubeInfo:
    return QubeInfo(name=q.name, klass=q.klass, template=q.template, netvm=q.netvm,
                    default_dispvm=q.default_dispvm,
                    template_for_dispvms=q.template_for_dispvms, auto_cleanup=q.auto_cleanup)


def _resolve(ctx: Context, members: list[Qube], profile: Profile) -> Plan | str | None:
    """The broker's plan for a caller of this group, or why it refuses; None
    if every one of them vanished meanwhile."""
    for member in members:
        try:
            return make_plan(ctx.backend, _info(member), profile)
        except Refusal as e:
            return e.reason
        except NoSuchQube:
            continue  # that caller is gone; the plan of another one is the same
    return None


def plans(ctx: Context) -> dict[str, dict[Plan | str, list[str]]]:
    """profile -> (Plan, or the refusal's reason) -> caller names. Cached."""
    if ctx._plans or ctx.config is None:
        return ctx._plans
    for profile in ctx.config.profiles.values():
        outcome: dict[Plan | str, list[str]] = defaultdict(list)
        for members in callers(ctx).values():
            result = _resolve(ctx, members, profile)
            if result is not None:
                outcome[result] += [m.name for m in members]
        ctx._plans[profile.name] = dict(outcome)
    return ctx._plans


def _fix(ctx: Context, profile: Profile, reason: str) -> list[str]:
    """The command that removes the broker's reason to refuse."""
    inv, edit = ctx.inventory, f"edit {ctx.config_path}: "
    if profile.dvm and profile.dvm in reason:
        q = inv.get(profile.dvm)
        if q is not None and not q.template_for_dispvms and q.ws:
            return [f"qvm-prefs {q.name} template_for_dispvms True"]
        good = ", ".join(d.name for d in ctx.ws_dvms()) or "none exists"
        return [edit + f"profiles.{profile.name}.dvm must name a Whonix-Workstation DVM "
                f"template ({good})"]
    if profile.gateway and profile.gateway in reason:
        return [edit + f"profiles.{profile.name}.gateway must name a Whonix-Gateway "
                f"({', '.join(ctx.gateways()) or 'none exists'})"]
    if "no Whonix-Workstation disposable template" in reason:
        lost = sorted(q.name for q in inv.values() if q.ws and q.klass == "AppVM"
                      and q.name.endswith("-dvm") and not q.template_for_dispvms)
        if lost:
            return [f"qvm-prefs {lost[0]} template_for_dispvms True"]
        templates = sorted(q.name for q in inv.values() if q.ws and q.klass == "TemplateVM")
        t = templates[-1] if templates else "whonix-workstation-18"
        return [f"qvm-create --class AppVM --template {t} --label red "
                f"--property template_for_dispvms=True {t}-dvm",
                ctx.gateway_fix(f"{t}-dvm")]
    if "several Whonix-Workstation DVM templates" in reason:
        return [edit + f'[profiles.{profile.name}] dvm = "<one of them>"']
    if "no Whonix-Gateway" in reason:
        gws = ctx.gateways()
        return [edit + f'[profiles.{profile.name}] gateway = "{gws[0]}"'] if gws else \
            ["qvm-create --class AppVM --template whonix-gateway-18 --label purple "
             "--property provides_network=True sys-whonix"]
    return [edit + f"profiles.{profile.name}"]


def _profiles(ctx: Context) -> list[Finding]:
    out = []
    if ctx.config is None:
        return out
    for name, outcome in plans(ctx).items():
        profile = ctx.config.profiles[name]
        for result, names in outcome.items():
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6
                                            else "")
            if isinstance(result, Plan):
                out.append(finding("profile", PASS,
                                   f"profile {name}: DVM template {result.dvm}, network "
                                   f"{result.network} (for {shown})",
                                   [result.dvm] + ([result.gateway] if result.gateway else [])))
            else:
                out.append(finding("profile", FAIL,
                                   f"profile {name} is refused (66) for {shown}: {result}",
                                   names, _fix(ctx, profile, result)))
    return out


def _max(ctx: Context, q: Qube) -> int:
    """qubesd's get_feat_preload_max: dom0's preload-dispvm-max applies to the
    global default_dispvm (qubes/vm/mix/dvmtemplate.py), else the DVM's own."""
    value = q.features.get(PRELOAD_MAX)
    dom0 = ctx.inventory.get("dom0")
    if dom0 and PRELOAD_MAX in dom0.features and q.name == ctx.global_default_dispvm:
        value = dom0.features[PRELOAD_MAX]
    try:
        return max(0, int(value or "0"))
    except ValueError:
        return 0


def _preloads(ctx: Context) -> list[Finding]:
    """A preload boots with its DVM template's netvm: a profile can be served
    from it only when that netvm already is the profile's network."""
    out = []
    used: dict[tuple[str, str], Plan] = {}
    for name, outcome in plans(ctx).items():
        for result in outcome:
            if isinstance(result, Plan):
                used[(name, result.dvm)] = result
    for (name, dvm), plan in sorted(used.items()):
        q = ctx.inventory.get(dvm)
        if q is None or _max(ctx, q) == 0:
            continue
        if plan.fits_dvm:  # the broker takes CreateDisposable: preloads are its fast path
            out.append(finding("preload", PASS,
                               f"profile {name} can use the {_max(ctx, q)} preloaded disposables "
                               f"of {dvm} (its netvm is {q.netvm or 'none'})", [dvm]))
            continue
        base = dvm[:-4] if dvm.endswith("-dvm") else dvm
        new = f"{base}-{name}"[:31]
        net = plan.gateway or "''"
        out.append(finding(
            "preload", WARN,
            f"profile {name} ({plan.network}) cannot use the preloaded disposables of {dvm}: "
            f"they boot with netvm {q.netvm or 'none'}; each {name} open starts a fresh "
            f"disposable. For a fast path give {name} a DVM template of its own network",
            [dvm], [f"qvm-create --class AppVM --template {q.template} --label "
                    f"{'black' if plan.gateway is None else 'red'} "
                    f"--property template_for_dispvms=True {new}",
                    f"qvm-prefs {new} netvm {net}", f"qvm-prefs {new} default_dispvm ''",
                    f"qvm-features {new} {PRELOAD_MAX} 2",
                    f'edit {ctx.config_path}: [profiles.{name}] dvm = "{new}"']))
    if not out:
        out.append(finding("preload", PASS, "no DVM template a profile uses has preloaded "
                           f"disposables ({PRELOAD_MAX}); each open starts a fresh one"))
    return out


def run(ctx: Context) -> list[Finding]:
    if ctx.config is None:
        return [finding("config", FAIL, f"every request is refused (66): {ctx.config_error}",
                        fix=[f"edit {ctx.config_path}"])]
    return [finding("config", PASS, f"{ctx.config_path}: "
                    f"{len(ctx.config.profiles)} profiles, default {ctx.config.default_profile}"),
            *_profiles(ctx), *_preloads(ctx)]
