"""whonix-open-admin as a dom0 administrator runs it (the installed command, a
subprocess): a failure under --json is still one JSON document, naming the
error; --version (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEADLINE
from whonix_open import __version__

COMMAND = Path(sys.executable).with_name("whonix-open-admin")  # `make venv`
UNREACHABLE = "cannot read the system from qubesd: qubesd is not reachable (simulated)"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMMAND), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=DEADLINE, check=False)


@pytest.mark.parametrize(("args", "command"), [
    (["check", "--json"], "check"),
    (["status", "--json"], "status"),
    (["reap", "--json"], "reap"),
    (["policy", "explain", "--json", "anon-whonix"], "policy explain"),
])
def test_json_even_when_qubesd_cannot_be_read(make_admin, args, command):
    admin = make_admin("qubesd-down")
    got = _run(admin.env(), *args)  # its run dir: WHONIX_OPEN_RUN_DIR
    assert got.returncode == 3
    assert json.loads(got.stdout) == {"version": 1, "command": command,
                                      "error": UNREACHABLE, "exit": 3}
    assert got.stderr == f"whonix-open-admin: {UNREACHABLE}\n"


def test_without_json_the_failure_is_one_line_and_no_output(make_admin):
    admin = make_admin("qubesd-down")
    got = _run(admin.env(), "check", "--policy-dir", str(admin.policy))
    assert (got.returncode, got.stdout) == (3, "")
    assert got.stderr == f"whonix-open-admin: {UNREACHABLE}\n"


def test_policy_explain_of_an_unknown_qube_in_json(admin):
    got = _run(admin.env(), "policy", "explain", "--json", "--policy-dir", str(admin.policy),
               "no-such-qube")
    assert got.returncode == 2
    assert json.loads(got.stdout) == {"version": 1, "command": "policy explain",
                                      "error": "no qube named 'no-such-qube'", "exit": 2}
    assert got.stderr == "whonix-open-admin: no qube named 'no-such-qube'\n"


def test_version():
    got = _run({"PATH": "/usr/bin:/bin"}, "--version")
    assert (got.returncode, got.stdout, got.stderr) == (0, f"whonix-open-admin {__version__}\n", "")
