"""whonix-open-admin: the entry point; dispatches to one subcommand module."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from whonix_open import __version__
from whonix_open.dom0.admin import cmd_check, cmd_policy, cmd_reap, cmd_setup, cmd_status, common

COMMANDS = {
    "check": (cmd_check, "check the Whonix setup and this service's state (PASS/WARN/FAIL)"),
    "status": (cmd_status, "show the open sessions"),
    "reap": (cmd_reap, "remove disposables left behind by dead sessions"),
    "policy": (cmd_policy, "policy explain QUBE [SERVICE[+ARG]]: who may call what, and why"),
    "setup": (cmd_setup, "a DVM template per network, with preloads (--undo takes it back)"),
}

USAGE = f"""\
usage: {common.PROG} COMMAND [OPTIONS]

Administer whonix-open in dom0: check that the network path of Whonix
disposables is sound before anyone relies on it, see what is open now, clean
up after dead sessions, see what the qrexec policy allows, and set up the
fast path (preloaded disposables) for every profile.

commands:
""" + "\n".join(f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()) + f"""

'{common.PROG} COMMAND --help' describes each command. Most take --json;
'{common.PROG} --version' prints the version.
The system is read through qubesadmin (python3-qubesadmin); the policy with
qrexec's own parser (python3-qrexec)."""


def main(args: Sequence[str] | None = None, app: Any = None,
         env: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if args is None else list(args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return common.EXIT_OK if args else common.EXIT_USAGE
    if args[0] == "--version":
        print(f"{common.PROG} {__version__}")
        return common.EXIT_OK
    command = COMMANDS.get(args[0])
    if command is None:
        common.error(f"unknown command {args[0]!r}; see '{common.PROG} --help'")
        return common.EXIT_USAGE
    try:
        return command[0].main(args[1:], app=app, env=env)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader is gone, so is our output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
