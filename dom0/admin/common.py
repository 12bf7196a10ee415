"""What the subcommands share: options, the way they reach the system, and
turning failures into a sentence and an exit code (never a traceback)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from whonix_open.dom0 import sessions
from whonix_open.dom0.admin import records
from whonix_open.dom0.admin.findings import SCHEMA_VERSION
from whonix_open.dom0.admin.inventory import Source, connect
from whonix_open.dom0.backend import BackendError

PROG = "whonix-open-admin"
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def parser(name: str, summary: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"{PROG} {name}", description=f"{summary}\n\n{description}",
                                   epilog=epilog, formatter_class=Formatter)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (schema in docs/ADMIN.md) instead of text")


def add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", metavar="DIR",
                   help=f"the broker's session records (default: ${sessions.RUN_DIR_ENV} or "
                        f"{sessions.DEFAULT_RUN_DIR})")


def add_policy_dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy-dir", metavar="DIR", action="append", dest="policy_dirs",
                   help="read qrexec policy from DIR instead of qrexec's own directories "
                        "(/run/qubes/policy.d, /etc/qubes/policy.d); may be repeated")


def run_dir(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    return args.run_dir or sessions.run_dir(env)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


class Failure(Exception):
    """A subcommand cannot do its job: *message* and exit *code* (run() says it)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def run(body: Callable[[Source, Mapping[str, str]], int], app: Any,
        env: Mapping[str, str] | None, json_command: str | None = None) -> int:
    """Connect (or take the injected app) and run *body*. qubesd failures
    (exit 3) and a Failure become one line on stderr and, when *json_command*
    names the command whose --json was asked for, a JSON document on stdout:
    {"version", "command", "error", "exit"}."""
    env = os.environ if env is None else env
    try:
        try:
            source = connect(env, app)
        except ImportError as e:
            raise Failure(EXIT_UNREACHABLE,
                          f"qubesadmin is not installed (python3-qubesadmin): {e}") from None
        return body(source, env)
    except BackendError as e:
        failure = Failure(EXIT_UNREACHABLE, f"cannot read the system from qubesd: {e}")
    except records.RunDirUnusable as e:
        failure = Failure(EXIT_UNREACHABLE, str(e))
    except Failure as e:
        failure = e
    error(failure.message)
    if json_command:
        emit_json({"version": SCHEMA_VERSION, "command": json_command,
                   "error": failure.message, "exit": failure.code})
    return failure.code


def parse(p: argparse.ArgumentParser, args: Sequence[str] | None) -> argparse.Namespace:
    return p.parse_args(sys.argv[2:] if args is None else list(args))
