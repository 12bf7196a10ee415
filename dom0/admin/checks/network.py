"""The network path of Whonix qubes outside the broker: the stock
qvm-open-in-dvm of a Whonix qube uses its default_dispvm, whose netvm it
inherits (qubes-issues #3561, #10328); a disposable's own default_dispvm is
how code in it reaches a further disposable (qubes.VMShell to @dispvm is
allowed by 90-default) - the nested-disposable escape."""

from __future__ import annotations

from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.findings import FAIL, PASS, WARN, Finding, finding
from whonix_open.dom0.admin.inventory import Qube
from whonix_open.dom0.admission import OPT_IN_FEATURE
from whonix_open.dom0.disposable import MARKER_FEATURE
from whonix_open.dom0.resolve import feature_true


def _users(ctx: Context, dvm: str) -> list[str]:
    """Whonix qubes whose default_dispvm chain reaches *dvm*."""
    found = []
    for q in sorted(ctx.inventory.values()):
        if q.whonix_ws and q.name != dvm and dvm in _chain(ctx, q)[1:]:
            found.append(q.name)
    return found


def _dvm_netvm(ctx: Context) -> list[Finding]:
    out = []
    for q in ctx.ws_dvms():
        if ctx.fits_tor_or_none(q.netvm):
            out.append(finding("dvm-netvm", PASS,
                               f"DVM template {q.name}: netvm {q.netvm or 'none'}", [q.name]))
            continue
        users = _users(ctx, q.name)
        used = f"; it is the default_dispvm of {', '.join(users)}" if users else ""
        out.append(finding(
            "dvm-netvm", FAIL,
            f"Whonix-Workstation DVM template {q.name} has netvm {q.netvm}, which is not "
            f"a Whonix-Gateway: disposables started from it the stock way "
            f"(qvm-open-in-dvm, @dispvm{used}) go out in clearnet",
            [q.name, q.netvm, *users], [ctx.gateway_fix(q.name)]))
    return out


def _anon_netvm(ctx: Context, q: Qube) -> Finding | None:
    if ctx.fits_tor_or_none(q.netvm):
        return None
    return finding("anon-netvm", FAIL,
                   f"Whonix qube {q.name} has netvm {q.netvm}, which is not a Whonix-Gateway",
                   [q.name, q.netvm], [ctx.gateway_fix(q.name)])


def _fitting_dvm(ctx: Context) -> str:
    good = [d.name for d in ctx.ws_dvms() if ctx.fits_tor_or_none(d.netvm)]
    return good[0] if good else "''"


def _chain(ctx: Context, q: Qube) -> list[str]:
    """q, its default_dispvm, that one's, ... as far as disposables can nest
    (a disposable of d gets d's default_dispvm, or d itself when unset)."""
    chain = [q.name]
    current = q.default_dispvm
    while current is not None and current not in chain:
        chain.append(current)
        d = ctx.inventory.get(current)
        if d is None or not d.is_ws_dvm:
            break
        current = d.default_dispvm
    return chain


def _default_dispvm(ctx: Context, q: Qube) -> tuple[str, str] | Finding | None:
    """The first bad link (owner, target) of q's chain; a finding for the
    broker's own disposables, which must have none at all."""
    if q.klass == "DispVM" and q.features.get(MARKER_FEATURE) is not None:
        if q.default_dispvm is None:
            return None
        return finding("anon-default-dispvm", FAIL,
                       f"disposable {q.name} of this service has default_dispvm "
                       f"{q.default_dispvm} (the broker sets none): code in it can start a "
                       f"disposable with another network", [q.name, q.default_dispvm],
                       [f"qvm-kill {q.name}"])
    chain = _chain(ctx, q)
    last = ctx.inventory.get(chain[-1])
    if len(chain) > 1 and (last is None or not last.is_ws_dvm):
        return chain[-2], chain[-1]
    return None  # a WS DVM's own netvm is the dvm-netvm check's


def _bad_links(ctx: Context, links: dict[tuple[str, str], list[str]]) -> list[Finding]:
    out = []
    for (owner, target), affected in links.items():
        q = ctx.inventory[owner]
        others = [n for n in affected if n != owner]
        via = f" (and so for {', '.join(others)}, whose chain passes {owner})" if others else ""
        out.append(finding(
            "anon-default-dispvm", WARN if q.klass == "TemplateVM" else FAIL,
            f"Whonix qube {owner} has default_dispvm {target}, which is not a "
            f"Whonix-Workstation DVM template: disposables started from it (qvm-open-in-dvm, "
            f"@dispvm, a disposable started from a disposable) are not Whonix and may go out "
            f"in clearnet{via}", [owner, target, *others],
            [f"qvm-prefs {owner} default_dispvm {_fitting_dvm(ctx)}"]))
    return out


def _opt_ins(ctx: Context) -> list[Finding]:
    """Qubes the broker lets use profiles with a network although they have
    no netvm (dom0/admission.py): the administrator said so, but it is the
    one way their data reaches a network through whonix-open."""
    out = []
    offline = []
    for q in sorted(ctx.inventory.values()):
        if q.klass == "AdminVM" or q.netvm is not None:
            continue
        if feature_true(q.features.get(OPT_IN_FEATURE)):
            out.append(finding(
                "network-opt-in", WARN,
                f"{q.name} has no netvm, but the feature {OPT_IN_FEATURE} lets it use profiles "
                f"with a network: a file, link or app it sends can reach the network "
                f"through the disposable", [q.name],
                [f"qvm-features --unset {q.name} {OPT_IN_FEATURE}"]))
        else:
            offline.append(q.name)
    if offline:
        out.append(finding("network-opt-in", PASS,
                           f"qubes without a netvm get only offline profiles (79 otherwise): "
                           f"{', '.join(offline)}"))
    return out


def run(ctx: Context) -> list[Finding]:
    out = _dvm_netvm(ctx) + _opt_ins(ctx)
    bad: list[Finding] = []
    links: dict[tuple[str, str], list[str]] = {}
    for q in sorted(ctx.inventory.values()):
        if not q.whonix_ws or q.klass == "AdminVM" or q.gw:
            continue
        if not q.is_ws_dvm:
            f = _anon_netvm(ctx, q)
            if f:
                bad.append(f)
        link = _default_dispvm(ctx, q)
        if isinstance(link, Finding):
            bad.append(link)
        elif link is not None:
            links.setdefault(link, []).append(q.name)
    bad += _bad_links(ctx, links)
    out += bad
    if not any(f.check == "anon-netvm" for f in bad):
        out.append(finding("anon-netvm", PASS, "every Whonix qube's netvm is a "
                           "Whonix-Gateway or none"))
    if not any(f.check == "anon-default-dispvm" for f in bad):
        out.append(finding("anon-default-dispvm", PASS, "every Whonix qube's default_dispvm "
                           "chain stays in Whonix-Workstation DVM templates (or none)"))
    return out
