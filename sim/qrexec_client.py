"""A stand-in for a qube's qrexec-client-vm, for the demo and the VM tests.

    qrexec-client-vm TARGET SERVICE[+ARG] [LOCAL_PROGRAM [ARGS...]]

(sim/bin/qrexec-client-vm runs this; put sim/bin first on PATH.) It plays
the whole qrexec path from a qube to a dom0 service:

- the calling qube is WHONIX_OPEN_SIM_CALLER (required);
- every byte of SERVICE+ARG outside [A-Za-z0-9_.+-] becomes `_`, as qrexec does;
- policy: a service listed in the state's faults.policy_deny or in
  WHONIX_OPEN_SIM_DENY (comma/space separated; `Service` or `Service+arg`)
  is refused with 126; only dom0 is a target here (others: 126 as well);
- the executable is <rpc dir>/Service+ARG or else <rpc dir>/Service
  (WHONIX_OPEN_RPC_DIR, default the repo's qubes-rpc/); none: 127;
- it runs `[sys.executable, executable, ARG?]` with qrexec's environment, the
  stand-in's own stdin/stdout passed straight through and its stderr going to
  <sim dir>/logs/qrexec.<caller>.log (a dom0 service's stderr never reaches the
  caller); the exit code is the service's;
- with LOCAL_PROGRAM, that program's stdin/stdout are connected to the service
  and the program's exit code is returned instead.

The service runs in its own session, as in reality it runs on another
machine: signals sent to the caller's process group do not reach it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from whonix_open.contract import Exit
from whonix_open.sim.state import SIM_DIR_ENV, SimState, StateError

CALLER_ENV = "WHONIX_OPEN_SIM_CALLER"
DENY_ENV = "WHONIX_OPEN_SIM_DENY"
RPC_DIR_ENV = "WHONIX_OPEN_RPC_DIR"
REPO_RPC_DIR = Path(__file__).resolve().parent.parent / "qubes-rpc"
DOM0_TARGETS = ("dom0", "@adminvm")
# The dom0 service gets dom0's environment, not the caller's: only these pass.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
# Options of the real client that change nothing here.
IGNORED_OPTIONS = ("-t", "-T", "--filter-escape-chars-stdout", "--filter-escape-chars-stderr",
                   "--no-filter-escape-chars-stdout", "--no-filter-escape-chars-stderr")
USAGE = "usage: qrexec-client-vm TARGET SERVICE[+ARG] [LOCAL_PROGRAM [ARGS...]]"


def sanitise(text: str) -> str:
    """qrexec's rule: every byte outside [A-Za-z0-9_.+-] becomes `_`."""
    raw = os.fsencode(text)
    return re.sub(rb"[^A-Za-z0-9_.+-]", b"_", raw).decode("ascii")


def denied(service: str, arg: str, env: Mapping[str, str], sim_dir: str | None) -> bool:
    rules = set(re.split(r"[\s,]+", env.get(DENY_ENV, "").strip())) - {""}
    if sim_dir:
        with contextlib.suppress(StateError):
            rules.update(SimState(sim_dir).read()["faults"].get("policy_deny") or [])
    return service in rules or f"{service}+{arg}" in rules


def find_executable(rpc_dir: Path, service: str, arg: str) -> Path | None:
    """qrexec looks for `Service+arg` first, then `Service`."""
    for candidate in (f"{service}+{arg}", service):
        if candidate in ("", ".", ".."):
            continue
        path = rpc_dir / candidate
        if path.is_file():
            return path
    return None


def service_env(env: Mapping[str, str], caller: str, service: str, arg: str) -> dict[str, str]:
    out = {k: env[k] for k in PASSED_ENV if k in env}
    out.update({k: v for k, v in env.items()
                if k.startswith("WHONIX_OPEN_") and k not in (CALLER_ENV, DENY_ENV)})
    out.update({
        "QREXEC_REMOTE_DOMAIN": caller,
        "QREXEC_SERVICE_FULL_NAME": f"{service}+{arg}",
        "QREXEC_SERVICE_ARGUMENT": arg,
        "QREXEC_REQUESTED_TARGET_TYPE": "name",
        "QREXEC_REQUESTED_TARGET": "dom0",
    })
    return out


def _fail(code: int, message: str) -> int:
    print(f"qrexec-client-vm (sim): {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    while args and args[0] in IGNORED_OPTIONS:
        args.pop(0)
    if args and args[0] == "--":
        args.pop(0)
    if len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    target, full, local = args[0], args[1], args[2:]

    caller = env.get(CALLER_ENV)
    if not caller:
        return _fail(Exit.QREXEC_FAILED, f"{CALLER_ENV} is not set (which qube is calling?)")
    service, _, arg = sanitise(full).partition("+")
    sim_dir = env.get(SIM_DIR_ENV)
    if target not in DOM0_TARGETS or denied(service, arg, env, sim_dir):
        return _fail(Exit.POLICY_DENIED, f"request refused: {service}+{arg} to {target}")
    rpc_dir = Path(env.get(RPC_DIR_ENV) or REPO_RPC_DIR)
    executable = find_executable(rpc_dir, service, arg)
    if executable is None:
        return _fail(Exit.SERVICE_NOT_FOUND, f"service {service} not found in {rpc_dir}")

    cmd = [sys.executable, str(executable), *([arg] if arg else [])]
    senv = service_env(env, caller, service, arg)
    with _service_log(sim_dir, caller) as err:
        if not local:
            proc = subprocess.Popen(cmd, env=senv, stderr=err, start_new_session=True)
            return _exit_code(proc.wait())
        return _with_local_program(cmd, senv, err, local)


@contextlib.contextmanager
def _service_log(sim_dir: str | None, caller: str) -> Iterator[int | IO[bytes]]:
    """Where the service's stderr goes, like /var/log/qubes/qrexec.<caller>.log."""
    if not sim_dir:
        yield subprocess.DEVNULL
        return
    log_dir = Path(sim_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"qrexec.{caller}.log", "ab") as f:
        yield f


def _exit_code(status: int) -> int:
    return 128 - status if status < 0 else status  # killed by a signal: 128+N


def _with_local_program(cmd: list[str], senv: dict[str, str], err: int | IO[bytes],
                        local: list[str]) -> int:
    """LOCAL_PROGRAM's stdout feeds the service's stdin and the service's
    stdout feeds LOCAL_PROGRAM's stdin; its exit code is what counts."""
    to_service_r, to_service_w = os.pipe()
    from_service_r, from_service_w = os.pipe()
    try:
        service = subprocess.Popen(cmd, env=senv, stdin=to_service_r, stdout=from_service_w,
                                   stderr=err, start_new_session=True)
        try:
            program = subprocess.Popen(local, stdin=from_service_r, stdout=to_service_w)
        except OSError as e:
            service.kill()
            service.wait()
            return _fail(Exit.QREXEC_FAILED, f"cannot run local program: {e.strerror}")
    finally:
        for fd in (to_service_r, to_service_w, from_service_r, from_service_w):
            os.close(fd)
    code = program.wait()
    service.wait()
    return _exit_code(code)
