"""Does every profile resolve, for every calling qube, and which profiles
take the R4.3 preloaded-disposable fast path? Resolution is the broker's own `make_plan` (through
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
from whonix_open.dom0.resolve import SETUP_MARKER, Plan, make_plan

PRELOAD_MAX = "preload-dispvm-max"
SETUP_COMMAND = "whonix-open-admin setup"


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


def _works_in(q: Qube) -> bool:
    """A qube a user works in (not a DVM template, not a disposable): the
    callers whose opens the fast path is about."""
    return q.klass in ("AppVM", "StandaloneVM") and not q.template_for_dispvms


def _fast_path(ctx: Context) -> list[Finding]:
    """A profile is on the fast path when the broker may use CreateDisposable
    (its DVM template's own netvm is its network: a preload boots with that
    netvm) and the DVM template keeps preloads. Missing it is a WARN where
    preloads are in use on this system, else one PASS naming the command."""
    dvms = ctx.ws_dvms()
    if ctx.config is None or not dvms:
        return []
    if not ctx.preloads_supported:
        return [finding("fast-path", PASS, "this qubesd has no preloaded disposables (R4.2): "
                        "each open boots a disposable; preloads need R4.3")]
    out, slow = [], []
    for name, outcome in plans(ctx).items():
        for plan, names in outcome.items():
            q = ctx.inventory.get(plan.dvm) if isinstance(plan, Plan) else None
            if q is None or not any(_works_in(ctx.inventory[n]) for n in names
                                    if n in ctx.inventory):
                continue
            have = _max(ctx, q)
            if plan.fits_dvm and have:
                out.append(finding("fast-path", PASS,
                                   f"profile {name} takes one of the {have} preloaded "
                                   f"disposables of {plan.dvm} (netvm {q.netvm or 'none'})",
                                   [plan.dvm]))
                continue
            why = (f"{plan.dvm} keeps no preloaded disposables" if plan.fits_dvm else
                   f"the netvm of {plan.dvm} is {q.netvm or 'none'}, not {plan.network}")
            more = " --preloads 2" if plan.fits_dvm and q.features.get(SETUP_MARKER) else ""
            slow.append((name, plan.dvm, why, f"{SETUP_COMMAND} --profile {name}{more}"))
    if slow and any(_max(ctx, q) for q in dvms):  # preloads are wanted here
        out += [finding("fast-path", WARN,
                        f"profile {name} boots a fresh disposable for each open (5-20 s "
                        f"instead of about 1): {why}", [dvm], [fix])
                for name, dvm, why, fix in slow]
    elif slow:
        names = ", ".join(sorted({s[0] for s in slow}))
        out.append(finding("fast-path", PASS,
                           f"no DVM template keeps preloaded disposables: each open of "
                           f"{names} boots one (5-20 s); '{SETUP_COMMAND}' gives every "
                           f"profile a preloaded DVM template of its network",
                           fix=[SETUP_COMMAND]))
    return out


def run(ctx: Context) -> list[Finding]:
    if ctx.config is None:
        return [finding("config", FAIL, f"every request is refused (66): {ctx.config_error}",
                        fix=[f"edit {ctx.config_path}"])]
    return [finding("config", PASS, f"{ctx.config_path}: "
                    f"{len(ctx.config.profiles)} profiles, default {ctx.config.default_profile}"),
            *_profiles(ctx), *_fast_path(ctx)]
