"""whonix-open-admin policy explain: what one qube may call, and why."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from whonix_open.contract import SERVICE_APP, SERVICE_OPEN, SERVICE_URL, SERVICE_VIEW
from whonix_open.dom0.admin import common, policy
from whonix_open.dom0.admin.checks.policy import requests
from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.findings import SCHEMA_VERSION
from whonix_open.dom0.admin.inventory import Source

DESCRIPTION = """\
explain QUBE [SERVICE[+ARG]]

For QUBE, evaluates the qrexec policy exactly as dom0 does - the real
parser (python3-qrexec) over every policy file, with the system information
qrexec-policy-daemon gets from qubesd - and shows for each call the result
(allow, ask, deny), the rule that decides it (file:line and its text) and
where an allowed call goes - and, for a whonix call the policy lets through,
whether the broker still refuses it before creating anything (its own code
decides: e.g. 79, a qube without a netvm asking for a network). Without
SERVICE: the whonix services with each profile (links: those with a
network; apps: APP+PROFILE; conversions: 300+PROFILE for the offline
ones), and the stock calls a Whonix qube makes to
@dispvm (qubes.OpenInVM, qubes.OpenURL, qubes.VMShell).

Exit status: 0, 2 usage or unknown qube, 3 qubesd or the policy cannot be read."""

STOCK = (("qubes.OpenInVM", "+"), ("qubes.OpenURL", "+"), ("qubes.VMShell", "+"))
BROKER_SERVICES = (SERVICE_OPEN, SERVICE_VIEW, SERVICE_URL, SERVICE_APP)
DOM0 = ("dom0", "@adminvm")


def get_parser() -> argparse.ArgumentParser:
    p = common.parser("policy", "Explain the qrexec policy for one qube.", DESCRIPTION)
    p.add_argument("action", choices=["explain"], help="what to do (explain)")
    p.add_argument("qube", help="the calling qube")
    p.add_argument("call", nargs="?", metavar="SERVICE[+ARG]",
                   help="one call to explain (default: all of this service's calls)")
    p.add_argument("--target", default=None,
                   help="the requested target (default: dom0 for whonix.*, else @dispvm)")
    common.add_json(p)
    common.add_policy_dirs(p)
    common.add_run_dir(p)
    return p


def _calls(ctx: Context, call: str | None, target: str | None) -> list[tuple[str, str, str]]:
    if call:
        service, _, arg = call.partition("+")
        t = target or ("dom0" if service.startswith("whonix.") else "@dispvm")
        return [(service, "+" + arg, t)]
    ours = [(s, a, target or "dom0") for s, a in requests(ctx)]
    return ours + [(s, a, target or "@dispvm") for s, a in STOCK]


def _broker(ctx: Context, d: policy.Decision) -> int | None:
    """For a whonix call the policy lets through to dom0: the code the broker
    refuses it with before creating anything (e.g. 79), from its own code."""
    if d.result == "deny" or d.service not in BROKER_SERVICES or d.target not in DOM0:
        return None
    code = ctx.broker_refuses(d.service, d.argument, d.source)
    return None if code is None else int(code)


def main(args: Sequence[str] | None = None, app: Any = None,
         env: Mapping[str, str] | None = None) -> int:
    opts = common.parse(get_parser(), args)

    def body(source: Source, env: Mapping[str, str]) -> int:
        ctx = Context.load(source, env, common.run_dir(opts, env), opts.policy_dirs)
        if opts.qube not in ctx.inventory:
            raise common.Failure(common.EXIT_USAGE, f"no qube named {opts.qube!r}")
        try:
            dirs = list(opts.policy_dirs) if opts.policy_dirs else policy.default_dirs()
            loaded = policy.load(dirs)
            info = policy.system_info(ctx.inventory)
            decisions = [policy.decide(loaded, info, s, a, opts.qube, t)
                         for s, a, t in _calls(ctx, opts.call, opts.target)]
        except policy.PolicyUnavailable as e:
            raise common.Failure(common.EXIT_UNREACHABLE, str(e)) from None
        except Exception as e:  # noqa: BLE001 - qrexec.exc.RequestError etc.: bad input
            raise common.Failure(common.EXIT_USAGE,
                                 f"cannot evaluate {opts.call or 'the calls'}: {e}") from None
        refused = [_broker(ctx, d) for d in decisions]
        if opts.json:
            common.emit_json({"version": SCHEMA_VERSION, "command": "policy explain",
                              "qube": opts.qube,
                              "decisions": [{**d.to_json(), "broker": code}
                                            for d, code in zip(decisions, refused, strict=True)]})
            return common.EXIT_OK
        for d, code in zip(decisions, refused, strict=True):
            where = f"{d.where}: {d.rule}" if d.where else "no rule matches (default deny)"
            to = f" -> {d.resolved}" if d.resolved else ""
            but = f", but the broker refuses it (exit {code})" if code else ""
            print(f"{d.service}{d.argument} -> {d.target}: {d.result.upper()}{to}{but}")
            print(f"    {where}")
        return common.EXIT_OK

    return common.run(body, app, env, "policy explain" if opts.json else None)
