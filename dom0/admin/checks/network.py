"""The network path of Whonix qubes outside the broker: the stock
qvm-open-in-dvm of a Whonix qube uses its default_dispvm, whose netvm it
inherits (qubes-issues #3561, #10328); a disposable's own default_dispvm is
how code in it reaches a further disposable (qubes.VMShell to @dispvm is
allowed by 90-default) - the nested-disposable escape."""

from __future__ import annotations

from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.findings import FAIL, PASS, WARN, Finding, finding
from whonix_open.dom0.admin.inventory import Qube
from whonix_open.dom0.disposable import MARKER_FEATURE


def _dvm_netvm(ctx: Context) -> list[Finding]:
    out = []
    for q in ctx.ws_dvms():
        if ctx.fits_tor_or_none(q.netvm):
            out.append(finding("dvm-netvm", PASS,
                               f"DVM template {q.name}: netvm {q.netvm or 'none'}", [q.name]))
        else:
            out.append(finding(
                "dvm-netvm", FAIL,
                f"Whonix-Workstation DVM template {q.name} has netvm {q.netvm}, which is not "
                f"a Whonix-Gateway: disposables started from it the stock way "
                f"(qvm-open-in-dvm, @dispvm) go out in clearnet",
                [q.name, q.netvm], [ctx.gateway_fix(q.name)]))
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


def _default_dispvm(ctx: Context, q: Qube) -> Finding | None:
    """Follow default_dispvm as far as disposables can nest."""
    inv = ctx.inventory
    if q.klass == "DispVM" and q.features.get(MARKER_FEATURE) is not None:
        if q.default_dispvm is None:
            return None
        return finding("anon-default-dispvm", FAIL,
                       f"disposable {q.name} of this service has default_dispvm "
                       f"{q.default_dispvm} (the broker sets none): code in it can start a "
                       f"disposable with another network", [q.name, q.default_dispvm],
                       [f"qvm-kill {q.name}"])
    level = WARN if q.klass == "TemplateVM" else FAIL
    chain = [q.name]
    current = q.default_dispvm
    while current is not None and current not in chain:
        chain.append(current)
        d = inv.get(current)
        path = " -> ".join(chain)
        if d is None or not d.is_ws_dvm:
            return finding("anon-default-dispvm", level,
                           f"Whonix qube {q.name}: default_dispvm chain {path} reaches "
                           f"{current}, which is not a Whonix-Workstation DVM template: "
                           f"disposables started from there (qvm-open-in-dvm, @dispvm) are "
                           f"not Whonix and may go out in clearnet", chain,
                           [f"qvm-prefs {chain[-2]} default_dispvm {_fitting_dvm(ctx)}"])
        if not ctx.fits_tor_or_none(d.netvm):
            return finding("anon-default-dispvm", level,
                           f"Whonix qube {q.name}: default_dispvm chain {path} reaches "
                           f"{current}, whose netvm {d.netvm} is not a Whonix-Gateway: "
                           f"its disposables go out in clearnet", [*chain, d.netvm],
                           [ctx.gateway_fix(current)])
        # A disposable of d gets d's default_dispvm, or d itself when unset.
        current = d.default_dispvm
    return None


def run(ctx: Context) -> list[Finding]:
    out = _dvm_netvm(ctx)
    bad = []
    for q in sorted(ctx.inventory.values()):
        if not q.whonix_ws or q.klass == "AdminVM" or q.gw:
            continue
        if not q.is_ws_dvm:
            f = _anon_netvm(ctx, q)
            if f:
                bad.append(f)
        f = _default_dispvm(ctx, q)
        if f:
            bad.append(f)
    out += bad
    if not any(f.check == "anon-netvm" for f in bad):
        out.append(finding("anon-netvm", PASS, "every Whonix qube's netvm is a "
                           "Whonix-Gateway or none"))
    if not any(f.check == "anon-default-dispvm" for f in bad):
        out.append(finding("anon-default-dispvm", PASS, "every Whonix qube's default_dispvm "
                           "chain stays in Whonix-Workstation DVM templates behind a "
                           "Whonix-Gateway (or none)"))
    return out
