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
                   help="print one JSON document (schema in the README) instead of text")


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


def run(body: Callable[[Source, Mapping[str, str]], int], app: Any,
        env: Mapping[str, str] | None) -> int:
    """Connect (or take the injected app) and run *body*; qubesd failures
    become one line on stderr and exit 3."""
    env = os.environ if env is None else env
    try:
        try:
            source = connect(env, app)
        except ImportError as e:
            error(f"qubesadmin is not installed (python3-qubesadmin): {e}")
            return EXIT_UNREACHABLE
        return body(source, env)
    except BackendError as e:
        error(f"cannot read the system from qubesd: {e}")
        return EXIT_UNREACHABLE
    except records.RunDirUnusable as e:
        error(str(e))
        return EXIT_UNREACHABLE


def parse(p: argparse.ArgumentParser, args: Sequence[str] | None) -> argparse.Namespace:
    return p.parse_args(sys.argv[2:] if args is None else list(args))
