"""whonix-open-admin setup: a DVM template per network, so that every
profile takes the R4.3 preloaded-disposable fast path; --undo takes it back."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from typing import Any

from whonix_open.dom0.admin import common, dvm_setup, profiles_edit
from whonix_open.dom0.admin.dvm_setup import Change, SetupError
from whonix_open.dom0.admin.findings import SCHEMA_VERSION
from whonix_open.dom0.admin.inventory import Source
from whonix_open.dom0.backend import BackendError
from whonix_open.dom0.config import CONFIG_ENV, DEFAULT_PATH, ConfigError, load_config

DESCRIPTION = f"""\
The broker hands out an R4.3 preloaded disposable (about a second, instead of
booting one) only when the profile's DVM template already has the profile's
network. For each profile whose DVM template does not - offline, a second
gateway - setup makes one: a new AppVM of the same Whonix-Workstation
template, with template_for_dispvms, the profile's netvm (none for offline),
itself as default_dispvm, Whonix's anon-vm tag and app-menu features, the
marker feature {dvm_setup.MARKER}=<profile> and {dvm_setup.PRELOAD_MAX}; then
it pins the profile to it in profiles.toml (comments kept, written
atomically). A profile whose DVM template already fits is left as it is.

It is safe to run again: what is already there is not changed. On R4.2 the
DVM templates are made all the same (no boot with the wrong network), but
preloads need R4.3. --undo removes exactly the qubes setup made (the marker)
and the lines it wrote, and refuses while anything else uses them.

Exit status: 0 done (or nothing to do), 1 a change failed part way (run it
again, or --undo), 2 usage, an unknown profile or something in the way
(nothing changed), 3 qubesd cannot be read."""


def preloads_arg(text: str) -> int:
    if not text.isdigit() or int(text) > dvm_setup.MAX_PRELOADS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 0 to {dvm_setup.MAX_PRELOADS}")
    return int(text)


def get_parser() -> argparse.ArgumentParser:
    p = common.parser("setup", "Give every profile a DVM template of its own network, "
                      "with preloaded disposables.", DESCRIPTION)
    p.add_argument("--profile", action="append", metavar="NAME", dest="profiles",
                   help="only this profile (may be repeated; default: all)")
    p.add_argument("--preloads", type=preloads_arg, metavar="N",
                   help=f"preloaded disposables per DVM template setup makes (default "
                        f"{dvm_setup.DEFAULT_PRELOADS}; each keeps a paused qube's memory)")
    p.add_argument("--undo", action="store_true",
                   help="remove the DVM templates setup made and its profiles.toml lines")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="print every change it would make; change nothing")
    common.add_json(p)
    return p


def _memory(profiles: Sequence[dvm_setup.ProfileSetup]) -> tuple[int, int]:
    kept = [s for s in profiles if s.preloads]
    return sum(s.preloads for s in kept), sum(s.preloads * s.memory for s in kept)


def _describe(s: dvm_setup.ProfileSetup) -> str:
    net = f"netvm {s.network if s.network != 'offline' else 'none'}"
    text = {"create": f"new DVM template {s.dvm} ({net})",
            "complete": f"DVM template {s.dvm} ({net}), completed",
            "ready": f"DVM template {s.dvm} ({net}), made by setup before",
            "fits": f"DVM template {s.dvm} ({net}) is on the fast path already; left as it is"
            }[s.action]
    pre = f"{s.preloads} preloaded" if s.preloads else "no preloads"
    return f"profile {s.profile}: {text}; {pre}"


def _run(source: Source, env: Mapping[str, str], opts: argparse.Namespace) -> int:
    path = env.get(CONFIG_ENV, DEFAULT_PATH)
    backend = source.backend
    started, calls = time.monotonic(), backend.calls
    try:
        if opts.undo:
            plan: Any = dvm_setup.plan_undo(backend, path)
        else:
            plan = dvm_setup.plan_setup(backend, load_config(env), path, opts.profiles,
                                        opts.preloads)
    except (SetupError, ConfigError, profiles_edit.EditError) as e:
        common.error(str(e) + "; nothing was changed")
        return common.EXIT_USAGE
    made: list[Change] = []
    failure = None
    if not opts.dry_run:
        try:
            dvm_setup.apply(backend, plan.changes, path, plan.config_text, made.append)
        except (BackendError, profiles_edit.EditError) as e:
            failure = str(e)
    code = common.EXIT_FINDINGS if failure else common.EXIT_OK
    seconds = round(time.monotonic() - started, 3)
    if opts.json:
        data = {"version": SCHEMA_VERSION, "command": "setup", "undo": opts.undo,
                "dry_run": opts.dry_run,
                "changes": [c.to_json() for c in plan.changes],
                "made": len(made), "error": failure,
                "config": {"path": path, "changed": plan.config_changed},
                "calls": backend.calls - calls, "seconds": seconds, "exit": code}
        if opts.undo:
            data["removed"] = plan.qubes
        else:
            count, mb = _memory(plan.profiles)
            data.update(preloads_supported=plan.preloads_supported,
                        profiles=[s.to_json() for s in plan.profiles],
                        memory={"preloads": count, "mb": mb})
        common.emit_json(data)
        return code
    if not opts.undo:
        for s in plan.profiles:
            print(_describe(s))
        if not plan.preloads_supported:
            print("this qubesd has no preloaded disposables (R4.2): each open still boots "
                  "one, of a DVM template that has the profile's network; preloads need "
                  "Qubes R4.3")
    elif not plan.qubes:
        print("setup made no qubes here")
    if not plan.changes:
        print("nothing to change")
        return code
    verb = "would change" if opts.dry_run else "changes"
    print(f"{verb}:")
    for c in plan.changes:
        print(f"  {c.command}")
    if not opts.undo:
        count, mb = _memory(plan.profiles)
        if count:
            print(f"memory: {count} preloaded disposables kept paused, about {mb} MB "
                  f"while idle")
    if failure:
        common.error(f"stopped after {len(made)} of {len(plan.changes)} changes: {failure}; "
                     f"run it again to finish, or '{common.PROG} setup --undo'")
    elif opts.dry_run:
        print("dry run: nothing was changed")
    else:
        print(f"done: {len(made)} changes, {backend.calls - calls} Admin API calls, "
              f"{seconds:.1f} s")
    return code


def main(args: Sequence[str] | None = None, app: Any = None,
         env: Mapping[str, str] | None = None) -> int:
    opts = common.parse(get_parser(), args)
    if opts.undo and (opts.profiles or opts.preloads is not None):
        common.error("--undo takes back everything setup made; it takes no --profile "
                     "or --preloads")
        return common.EXIT_USAGE
    return common.run(lambda source, env: _run(source, env, opts), app, env)
