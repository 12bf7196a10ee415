"""The qrexec-client-vm stand-in (sim/bin/qrexec-client-vm), run as a real
process against throwaway services in a temporary rpc dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whonix_open.sim.harness import BIN_DIR, SimQubes

# Reports what qrexec handed it on stdout, logs a secret to stderr, and exits
# with the code given as its argument (0 without one).
ECHO_SERVICE = """\
import json, os, sys
data = sys.stdin.buffer.read()
print(json.dumps({"argv": sys.argv[1:], "stdin": data.decode(),
                  "env": {k: v for k, v in os.environ.items()
                          if k.startswith(("QREXEC_", "WHONIX_OPEN_"))}}))
print("secret-on-stderr", file=sys.stderr)
arg = sys.argv[1] if len(sys.argv) > 1 else ""
sys.exit(int(arg) if arg.isdigit() else 0)
"""
UPPER_SERVICE = """\
import sys
sys.stdout.buffer.write(sys.stdin.buffer.read().upper())
sys.exit(3)
"""


@pytest.fixture
def rpc_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rpc"
    d.mkdir()
    (d / "test.Echo").write_text(ECHO_SERVICE)
    (d / "test.Upper").write_text(UPPER_SERVICE)
    return d


def stand_in(sim: SimQubes, rpc_dir: Path, *args: str, stdin: bytes = b"",
             caller: str | None = "anon-whonix", extra: dict | None = None
             ) -> subprocess.CompletedProcess:
    env = {"PATH": sim.path_with_stand_in(), "HOME": os.environ.get("HOME", "/"),
           **sim.env(caller), "WHONIX_OPEN_RPC_DIR": str(rpc_dir), **(extra or {})}
    if caller is None:
        assert "WHONIX_OPEN_SIM_CALLER" not in env
    return subprocess.run(["qrexec-client-vm", *args], input=stdin, env=env,
                          capture_output=True, timeout=30, check=False)


def report(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout)


def test_runs_the_service_with_qrexecs_environment(sim: SimQubes, rpc_dir: Path) -> None:
    r = stand_in(sim, rpc_dir, "dom0", "test.Echo+tor", stdin=b"in")
    assert r.returncode == 0, r.stderr
    got = report(r)
    assert got["argv"] == ["tor"]
    assert got["stdin"] == "in"
    env = got["env"]
    assert env["QREXEC_REMOTE_DOMAIN"] == "anon-whonix"
    assert env["QREXEC_SERVICE_FULL_NAME"] == "test.Echo+tor"
    assert env["QREXEC_SERVICE_ARGUMENT"] == "tor"
    assert env["QREXEC_REQUESTED_TARGET_TYPE"] == "name"
    assert env["QREXEC_REQUESTED_TARGET"] == "dom0"
    assert env["WHONIX_OPEN_SIM_DIR"] == str(sim.dir)
    assert env["WHONIX_OPEN_BACKEND"] == "sim"
    assert "WHONIX_OPEN_SIM_CALLER" not in env  # the service must use qrexec's variable


def test_the_service_stderr_goes_to_the_log_not_the_caller(sim: SimQubes,
                                                           rpc_dir: Path) -> None:
    r = stand_in(sim, rpc_dir, "dom0", "test.Echo+")
    assert b"secret" not in r.stderr and b"secret" not in r.stdout
    assert "secret-on-stderr" in (sim.dir / "logs" / "qrexec.anon-whonix.log").read_text()


@pytest.mark.parametrize("full", ["test.Echo", "test.Echo+"])
def test_empty_argument_is_not_in_argv(sim: SimQubes, rpc_dir: Path, full: str) -> None:
    got = report(stand_in(sim, rpc_dir, "@adminvm", full))
    assert got["argv"] == []
    assert got["env"]["QREXEC_SERVICE_ARGUMENT"] == ""
    assert got["env"]["QREXEC_SERVICE_FULL_NAME"] == "test.Echo+"


@pytest.mark.parametrize(("arg", "expected"), [
    ("a b/c", "a_b_c"), ("-x", "-x"), ("ünï", "__n__"), ("$(id);`x`", "__id___x_"),
    ("tor+more", "tor+more"), ("a\nb", "a_b")])
def test_argument_is_sanitised_like_qrexec(sim: SimQubes, rpc_dir: Path, arg: str,
                                           expected: str) -> None:
    got = report(stand_in(sim, rpc_dir, "dom0", f"test.Echo+{arg}"))
    assert got["argv"] == [expected]
    assert got["env"]["QREXEC_SERVICE_ARGUMENT"] == expected
    assert got["env"]["QREXEC_SERVICE_FULL_NAME"] == f"test.Echo+{expected}"


@pytest.mark.parametrize("code", ["0", "7", "64", "73"])
def test_exit_code_passes_through(sim: SimQubes, rpc_dir: Path, code: str) -> None:
    assert stand_in(sim, rpc_dir, "dom0", f"test.Echo+{code}").returncode == int(code)


def test_missing_service_is_127(sim: SimQubes, rpc_dir: Path) -> None:
    for full in ("test.Missing+x", "..+x", "+x"):
        r = stand_in(sim, rpc_dir, "dom0", full)
        assert r.returncode == 127, full
        assert r.stdout == b""


def test_specific_service_argument_file_wins(sim: SimQubes, rpc_dir: Path) -> None:
    (rpc_dir / "test.Echo+9").write_text("import sys; sys.exit(42)\n")
    assert stand_in(sim, rpc_dir, "dom0", "test.Echo+9").returncode == 42
    assert stand_in(sim, rpc_dir, "dom0", "test.Echo+8").returncode == 8


def test_policy_deny_from_the_state(sim: SimQubes, rpc_dir: Path) -> None:
    sim.set_fault("policy_deny", ["test.Echo"])
    r = stand_in(sim, rpc_dir, "dom0", "test.Echo+tor")
    assert r.returncode == 126 and r.stdout == b""
    assert stand_in(sim, rpc_dir, "dom0", "test.Upper").returncode == 3


def test_policy_deny_from_the_environment_per_argument(sim: SimQubes, rpc_dir: Path) -> None:
    deny = {"WHONIX_OPEN_SIM_DENY": "test.Upper, test.Echo+offline"}
    assert stand_in(sim, rpc_dir, "dom0", "test.Echo+offline", extra=deny).returncode == 126
    assert stand_in(sim, rpc_dir, "dom0", "test.Upper+", extra=deny).returncode == 126
    assert stand_in(sim, rpc_dir, "dom0", "test.Echo+5", extra=deny).returncode == 5


def test_only_dom0_is_a_target(sim: SimQubes, rpc_dir: Path) -> None:
    assert stand_in(sim, rpc_dir, "@dispvm", "test.Echo+").returncode == 126


def test_caller_is_required(sim: SimQubes, rpc_dir: Path) -> None:
    r = stand_in(sim, rpc_dir, "dom0", "test.Echo+", caller=None)
    assert r.returncode == 125
    assert b"WHONIX_OPEN_SIM_CALLER" in r.stderr


def test_usage(sim: SimQubes, rpc_dir: Path) -> None:
    r = stand_in(sim, rpc_dir, "dom0")
    assert r.returncode == 2 and b"usage" in r.stderr


def test_local_program_gets_the_stream_and_its_code_counts(sim: SimQubes,
                                                           rpc_dir: Path) -> None:
    local = ("import os, sys; os.write(1, b'hello'); os.close(1); "
             "sys.stderr.write(sys.stdin.read()); sys.exit(5)")
    r = stand_in(sim, rpc_dir, "dom0", "test.Upper+", sys.executable, "-c", local)
    assert r.returncode == 5  # the local program's, not the service's 3
    assert r.stderr == b"HELLO"


def test_default_rpc_dir_is_the_repos(sim: SimQubes) -> None:
    env = {"PATH": sim.path_with_stand_in(), **sim.env("anon-whonix")}
    r = subprocess.run([str(BIN_DIR / "qrexec-client-vm"), "dom0", "whonix.NoSuchService+"],
                       env=env, capture_output=True, timeout=30, check=False)
    assert r.returncode == 127
    assert str(Path(__file__).resolve().parents[2] / "qubes-rpc").encode() in r.stderr
