"""whonix-open-admin status: the sessions open now."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from typing import Any

from whonix_open.dom0.admin import common, records
from whonix_open.dom0.admin.findings import SCHEMA_VERSION
from whonix_open.dom0.admin.inventory import Inventory, Source

DESCRIPTION = """\
Lists the broker's sessions from its records in the run dir, joined with the
live system: what it holds (a file, a link or an app), the calling qube
(and, for a disposable caller, the qube that created it and against whose
limit it counts), the profile, the disposable and its power state, the
network (a gateway, or offline), the age and the time left until the
session's maximum lifetime. A session whose service died is shown as stale
(with --all), from what its record says: `whonix-open-admin reap` removes
what it left.

Exit status: 0, 2 usage, 3 qubesd cannot be read."""


def get_parser() -> argparse.ArgumentParser:
    p = common.parser("status", "Show the open sessions.", DESCRIPTION)
    common.add_json(p)
    p.add_argument("-a", "--all", action="store_true", help="also show stale sessions")
    common.add_run_dir(p)
    return p


def _creator(inventory: Inventory, caller: str | None) -> str | None:
    """R4.3 tags a disposable created-by-<qube> (qubes/vm/dispvm.py)."""
    q = inventory.get(caller or "")
    if q is None or q.klass != "DispVM":
        return None
    found = sorted(t[len("created-by-"):] for t in q.tags if t.startswith("created-by-"))
    return found[0] if found else None


def rows(scanned: Sequence[records.Record], inventory: Inventory, now: float) -> list[dict]:
    out = []
    for r in scanned:
        disposables = [{"name": n, "state": inventory[n].power_state if n in inventory
                        else "gone"} for n in r.disposables]
        out.append({
            "session": r.id, "state": "open" if r.alive else "stale", "pid": r.pid,
            "kind": r.kind, "caller": r.caller, "created_by": _creator(inventory, r.caller),
            "owner": r.owner, "profile": r.profile, "dvm": r.dvm, "network": r.network,
            "disposables": disposables, "creating": r.creating,
            "age_seconds": round(now - r.started) if r.started else None,
            "left_seconds": max(0, round(r.deadline - now)) if r.deadline else None,
        })
    return out


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def table(data: list[dict]) -> str:
    if not data:
        return "no open sessions"
    head = ("CALLER", "KIND", "PROFILE", "DISPOSABLE", "NETWORK", "AGE", "LEFT", "STATE")
    lines = [head]
    for d in data:
        caller = d["caller"] or d["owner"] or "?"
        creator = d["created_by"] or (d["owner"] if d["owner"] != caller else None)
        if creator:
            caller += f" (created by {creator})"
        disp = ", ".join(f"{x['name']}" + ("" if x["state"] == "Running" else f" [{x['state']}]")
                         for x in d["disposables"]) or "-"
        if d["creating"]:
            disp += f" (creating from {d['creating']})"
        lines.append((caller, d["kind"] or "?", d["profile"] or "?", disp, d["network"] or "?",
                      _duration(d["age_seconds"]), _duration(d["left_seconds"]), d["state"]))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in lines)


def main(args: Sequence[str] | None = None, app: Any = None,
         env: Mapping[str, str] | None = None) -> int:
    opts = common.parse(get_parser(), args)

    def body(source: Source, env: Mapping[str, str]) -> int:
        inventory = source.inventory(only="DispVM")
        scanned = [r for r in records.scan(common.run_dir(opts, env)) if r.alive or opts.all]
        data = rows(scanned, inventory, time.time())
        if opts.json:
            common.emit_json({"version": SCHEMA_VERSION, "command": "status", "sessions": data})
        else:
            print(table(data))
        return common.EXIT_OK

    return common.run(body, app, env, "status" if opts.json else None)
