"""whonix-open-admin check: the doctor."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from whonix_open.dom0.admin import common
from whonix_open.dom0.admin.checks import ALL
from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.findings import CHECKS, FAIL, PASS, SCHEMA_VERSION, Finding, summary
from whonix_open.dom0.admin.inventory import Source

DESCRIPTION = """\
Reads the whole system (qubes, profiles.toml, the broker's session records,
the qrexec policy) and reports each finding as PASS, WARN or FAIL, with the
qubes involved and the exact command that fixes it. Profiles are resolved
with the broker's own code, so a profile that passes here is one the broker
accepts.

Checks:
""" + "\n".join(textwrap.fill(text, 79, initial_indent=f"  {name:<20} ",
                                subsequent_indent=" " * 23) for name, text in CHECKS.items()) + """

Exit status: 0 when nothing FAILs, 1 when something does, 2 for a usage
error, 3 when qubesd cannot be read."""


def get_parser() -> argparse.ArgumentParser:
    p = common.parser("check", "Check the Whonix setup and this service's state.", DESCRIPTION)
    common.add_json(p)
    p.add_argument("-q", "--quiet", action="store_true", help="show only WARN and FAIL")
    common.add_run_dir(p)
    common.add_policy_dirs(p)
    return p


def findings(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    for check in ALL:
        out += check(ctx)
    return out


def report(found: list[Finding], quiet: bool) -> str:
    counts = summary(found)
    lines = []
    for f in found:
        if quiet and f.level == PASS:
            continue
        lines.append(f"{f.level:<4}  {f.check:<19} {f.message}")
        if f.level != PASS:
            if f.qubes:
                lines.append(f"{'':25} qubes: {', '.join(f.qubes)}")
            lines += [f"{'':25} fix:   {cmd}" for cmd in f.fix]
    lines.append(f"{counts['PASS']} PASS, {counts['WARN']} WARN, {counts['FAIL']} FAIL")
    return "\n".join(lines)


def main(args: Sequence[str] | None = None, app: Any = None,
         env: Mapping[str, str] | None = None) -> int:
    opts = common.parse(get_parser(), args)

    def body(source: Source, env: Mapping[str, str]) -> int:
        ctx = Context.load(source, env, common.run_dir(opts, env), opts.policy_dirs)
        found = findings(ctx)
        code = common.EXIT_FINDINGS if any(f.level == FAIL for f in found) else common.EXIT_OK
        if opts.json:
            common.emit_json({"version": SCHEMA_VERSION, "command": "check",
                              "findings": [f.to_json() for f in found],
                              "summary": summary(found), "exit": code})
        else:
            print(report(found, opts.quiet))
        return code

    return common.run(body, app, env, "check" if opts.json else None)
