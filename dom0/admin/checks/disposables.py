"""Disposables and DVM templates in a state the broker's guarantees do not
cover: a running DVM template (what runs there persists into every
disposable; Tor Browser must never run in it), named disposables and
disposables without auto_cleanup (no auto-shutdown), and disposables this
service left behind."""

from __future__ import annotations

import re

from whonix_open.dom0.admin import reaping, records
from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.findings import FAIL, PASS, WARN, Finding, finding
from whonix_open.dom0.disposable import MARKER_FEATURE

UNNAMED = re.compile(r"disp[0-9]+")  # qubesd's names for disposables it creates


def _running_dvms(ctx: Context) -> list[Finding]:
    out = []
    for q in sorted(ctx.inventory.values()):
        if not q.template_for_dispvms or not q.running:
            continue
        what = ("Whonix-Workstation DVM template" if q.ws else "DVM template")
        out.append(finding(
            "dvm-running", FAIL if q.ws else WARN,
            f"{what} {q.name} is running: whatever is done in it now persists into every "
            f"disposable started from it" + (" (never start Tor Browser in a DVM template)"
                                             if q.ws else ""),
            [q.name], [f"qvm-shutdown --wait {q.name}"]))
    return out


def _disposables(ctx: Context) -> list[Finding]:
    out = []
    for q in sorted(ctx.inventory.values()):
        if q.klass != "DispVM" or q.auto_cleanup:
            continue
        ours = q.features.get(MARKER_FEATURE) is not None
        if ours:
            out.append(finding(
                "no-auto-cleanup", FAIL,
                f"disposable {q.name} of this service has no auto_cleanup: it stays after "
                f"its session (the broker refuses such disposables)", [q.name],
                [f"qvm-kill {q.name}", f"qvm-remove --force {q.name}"]))
        elif UNNAMED.fullmatch(q.name):
            out.append(finding(
                "no-auto-cleanup", WARN,
                f"disposable {q.name} has no auto_cleanup: it is not removed when it stops",
                [q.name], [f"qvm-prefs {q.name} auto_cleanup True"]))
        else:
            out.append(finding(
                "named-disposable", WARN,
                f"named disposable {q.name}: no auto-shutdown, it runs and stays until "
                f"removed", [q.name], [f"qvm-shutdown --wait {q.name}",
                                       f"qvm-remove {q.name}"]))
    return out


def _orphans(ctx: Context) -> list[Finding]:
    with records.claimed(ctx.run_dir) as claim:
        found = reaping.orphans(ctx.backend, ctx.inventory, claim.alive, claim.stale)
    proven = [o for o in found if o.unproven is None]
    out = [finding("orphan", FAIL,
                   f"disposable {o.qube} ({'running' if o.running else 'halted'}) was "
                   f"created by session {o.session}, which is gone", [o.qube],
                   ["whonix-open-admin reap"]) for o in proven]
    if not proven:
        out.append(finding("orphan", PASS, "no disposable of this service outlived its session"))
    out += [finding("unproven", WARN,
                    f"disposable {o.qube} ({'running' if o.running else 'halted'}) may have been "
                    f"left by session {o.session}, which is gone; that cannot be proven "
                    f"({o.unproven}), so reap leaves it alone: remove it if nothing uses it",
                    [o.qube],
                    [f"qvm-kill {o.qube}"] if o.running else [f"qvm-remove --force {o.qube}"])
            for o in found if o.unproven is not None]
    return out


def run(ctx: Context) -> list[Finding]:
    found = _running_dvms(ctx) + _disposables(ctx)
    if not any(f.check == "dvm-running" for f in found):
        found.insert(0, finding("dvm-running", PASS, "no DVM template is running"))
    return found + _orphans(ctx)
