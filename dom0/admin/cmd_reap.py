"""whonix-open-admin reap: remove what dead sessions left behind."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from whonix_open.dom0.admin import common, reaping
from whonix_open.dom0.admin.findings import SCHEMA_VERSION
from whonix_open.dom0.admin.inventory import Source
from whonix_open.dom0.disposable import CONTAINED_TAG

DESCRIPTION = f"""\
Removes the disposables this service created whose session is gone (its
service no longer holds its record's lock: it was killed). A qube is removed
only when everything agrees: the dead session's record names it, and it is a
DispVM of the recorded DVM template with auto_cleanup, created by dom0,
carrying the tag {CONTAINED_TAG} and the feature {reaping.MARKER}=<that
session>. A qube that lacks any of it (a marker can be copied from a DVM
template; a SIGKILL can come before the marks) is reported as "skipped:
cannot prove ...", never killed. Liveness is the kernel's lock on the
record, never a pid, so a reused pid cannot keep an orphan alive.

Runs from whonix-open-reap.timer (every few minutes and at boot).

Exit status: 0 when everything found was removed (or nothing was found), 1
when something could not be removed, 2 usage, 3 qubesd cannot be read."""


def get_parser() -> argparse.ArgumentParser:
    p = common.parser("reap", "Remove disposables left behind by dead sessions.", DESCRIPTION)
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="only say what would be removed; change nothing")
    common.add_json(p)
    common.add_run_dir(p)
    return p


def main(args: Sequence[str] | None = None, app: Any = None,
         env: Mapping[str, str] | None = None) -> int:
    opts = common.parse(get_parser(), args)

    def body(source: Source, env: Mapping[str, str]) -> int:
        inventory = source.inventory(only="DispVM")  # before the records: see reaping.py
        actions = reaping.reap(source.backend, inventory, common.run_dir(opts, env),
                               dry_run=opts.dry_run)
        code = common.EXIT_FINDINGS if any(a.result == "failed" for a in actions) \
            else common.EXIT_OK
        if opts.json:
            common.emit_json({"version": SCHEMA_VERSION, "command": "reap",
                              "dry_run": opts.dry_run,
                              "actions": [a.to_json() for a in actions], "exit": code})
        elif not actions:
            print("nothing to reap")
        else:
            for a in actions:
                print(f"{a.qube}: {a.result} (session {a.session})")
        return code

    return common.run(body, app, env, "reap" if opts.json else None)
