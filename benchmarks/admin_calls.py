"""Admin API calls of `whonix-open-admin check`, `status` and `reap` for
systems of 12, 48 and 96 qubes (issue 15, 6: `check` grew quadratically -
212 calls for 12 qubes, 2014 for 48). Prints one line per size and the
ratio calls(48)/calls(12) (linear: <= 4.5).

Three ways to count, the same qubes each time:
- the simulated Qubes' own call log (SimBackend, in-process);
- with --real-library: at the socket of the qubesd stand-in
  (sim/qubesd_server.py), through the real, unmodified qubesadmin;
- with --real-qubesd PYTHON: at the socket of the REAL qubesd
  (tests/realqubesd/harness.py, run by PYTHON, a release venv's: e.g.
  .venv-r4.3/bin/python), through the real qubesadmin; the qubes are made
  through its Admin API.

    .venv/bin/python benchmarks/admin_calls.py [--real-library | --real-qubesd PY]
        [--sizes 12 48 96]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from whonix_open.dom0.admin.main import main as admin_main  # noqa: E402
from whonix_open.sim.harness import SimQubes  # noqa: E402

COMMANDS = ("check", "status", "reap")
BASE = 12  # the default scenario's qubes (dom0 included)


def _block(b: int) -> dict[str, dict[str, Any]]:
    """12 more qubes of the kinds a user's system has: Whonix and Debian
    AppVMs, a disposable template of their own with a caller (a caller group
    of its own for `check`), offline AppVMs, and one running disposable."""
    deb = {"klass": "AppVM", "template": "debian-13", "netvm": "sys-firewall"}
    anon = {"klass": "AppVM", "template": "whonix-workstation-18", "netvm": "sys-whonix",
            "tags": ["anon-vm"], "default_dispvm": "whonix-workstation-18-dvm"}
    return {
        f"disp{b}": {"klass": "DispVM", "template": "default-dvm", "auto_cleanup": True,
                     "netvm": "sys-firewall", "power_state": "Running",
                     "tags": ["created-by-dom0"]},
        f"anon{b}a": anon, f"anon{b}b": anon,
        **{f"work{b}{c}": {**deb, "default_dispvm": "default-dvm"} for c in "abcd"},
        f"dvm{b}": {**deb, "template_for_dispvms": True},
        f"mail{b}": {**deb, "default_dispvm": f"dvm{b}"},
        f"bank{b}": {**deb, "default_dispvm": f"dvm{b}"},
        f"usb{b}": {**deb, "netvm": ""},
        f"offline{b}": {**deb, "netvm": ""},
    }


def system(n: int) -> dict[str, Any]:
    """The default scenario (12 qubes, its vault replaced by a running
    disposable) plus (n - 12) / 12 blocks of `_block`: the same mix at every
    size, so a linear cost gives calls(48)/calls(12) <= 4."""
    if n % BASE:
        raise SystemExit(f"sizes are multiples of {BASE}")
    with open(REPO / "sim" / "scenarios" / "default.toml", "rb") as f:
        data = tomllib.load(f)
    qubes = {k: v for k, v in data["qubes"].items() if k != "vault"}
    qubes["disp0"] = _block(0)["disp0"]
    for b in range(1, n // BASE):
        qubes.update(_block(b))
    assert len(qubes) == n, len(qubes)
    return {**data, "qubes": qubes}


def measure(n: int, policy_dir: Path, tmp: Path, real: bool = False) -> dict[str, int]:
    """Admin API calls per command on a system of *n* qubes."""
    sim = SimQubes.create(tmp / f"sim{n}-{real}", system(n))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QREXEC_", "WHONIX_"))}
    env.update(sim.env())
    run_dir = tmp / f"run{n}-{real}"
    run_dir.mkdir()
    env.update(WHONIX_OPEN_RUN_DIR=str(run_dir), WHONIX_OPEN_CONFIG=str(tmp / "none.toml"))
    server = None
    if real:
        from whonix_open.sim.qubesd_server import QubesdServer

        server = QubesdServer(sim.dir, tmp / f"qubesd{n}.sock").start()
        env.update(WHONIX_OPEN_BACKEND="qubesadmin",
                   WHONIX_OPEN_QUBESD_SOCKET=server.socket_path)
        os.environ["WHONIX_OPEN_QUBESD_SOCKET"] = server.socket_path  # read by the backend
    calls = (lambda: len(server.calls)) if server else (lambda: len(sim.calls()))
    counts = {}
    try:
        for cmd in COMMANDS:
            args = [cmd, "--json"] + (["--policy-dir", str(policy_dir)] if cmd == "check" else [])
            before = calls()
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                code = admin_main(args, env=env)
            if code not in (0, 1):
                raise SystemExit(f"{cmd} on {n} qubes exited {code}")
            counts[cmd] = calls() - before
    finally:
        if server:
            server.stop()
        sim.kill_leftovers()
    return counts


def _real_system(n: int, directory: Path, python: str) -> Any:
    """The real qubesd with system(n): its own 12 qubes (vault replaced by a
    running disposable), then the blocks, made through its Admin API."""
    from tests.realqubesd.harness import RealQubesd

    q = RealQubesd(directory, python=python).start()
    q.expect_ok("admin.vm.Kill", "vault")
    q.expect_ok("admin.vm.Remove", "vault")
    made = {"disp0": _block(0)["disp0"]}
    for b in range(1, n // BASE):
        made.update(_block(b))
    for name, spec in made.items():  # DVM templates before the qubes that use them
        template = "default-dvm" if spec["klass"] == "DispVM" else spec["template"]
        q.expect_ok(f"admin.vm.Create.{spec['klass']}", "dom0", template,
                    f"name={name} label=red".encode())
        for key in ("netvm", "default_dispvm", "template_for_dispvms", "auto_cleanup"):
            if key in spec:
                value = spec[key]
                q.expect_ok("admin.vm.property.Set", name, key,
                            str(value).encode() if value != "" else b"")
        for tag in spec.get("tags", []):
            if not tag.startswith("created-by-"):  # qubesd sets that one itself
                q.expect_ok("admin.vm.tag.Set", name, tag)
        if spec.get("power_state") == "Running":
            q.expect_ok("admin.vm.Start", name)
    assert len(q.qubes()) == n, len(q.qubes())
    return q


def measure_real_qubesd(n: int, policy_dir: Path, tmp: Path, python: str) -> dict[str, int]:
    """Admin API calls per command, counted at the real qubesd's socket."""
    q = _real_system(n, tmp / f"real{n}", python)
    run_dir = tmp / f"run-real{n}"
    run_dir.mkdir()
    counts = {}
    try:
        with q.counting() as proxy:
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("QREXEC_", "WHONIX_"))}
            env.update(WHONIX_OPEN_BACKEND="qubesadmin", WHONIX_OPEN_QUBESD_SOCKET=proxy.path,
                       WHONIX_OPEN_RUN_DIR=str(run_dir),
                       WHONIX_OPEN_CONFIG=str(tmp / "none.toml"))
            os.environ["WHONIX_OPEN_QUBESD_SOCKET"] = proxy.path  # read by the backend
            for cmd in COMMANDS:
                args = [cmd, "--json"] + (["--policy-dir", str(policy_dir)]
                                          if cmd == "check" else [])
                before = len(proxy.calls)
                with contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    code = admin_main(args, env=env)
                if code not in (0, 1):
                    raise SystemExit(f"{cmd} on {n} qubes (real qubesd) exited {code}")
                counts[cmd] = len(proxy.calls) - before
    finally:
        q.kill_leftovers()
        q.stop()
    return counts


def policy_dir(tmp: Path) -> Path:
    """This project's policy plus Qubes' 90-default and Whonix's 80-whonix,
    as the admin tests use them (35-compat needs /etc/qubes-rpc/policy)."""
    d = tmp / "policy.d"
    d.mkdir()
    for f in (REPO / "policy").glob("*.policy"):
        shutil.copy(f, d)
    for name in ("80-whonix.policy", "90-default.policy"):
        shutil.copy(REPO / "tests" / "policy" / "fixtures" / name, d)
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[12, 48, 96])
    p.add_argument("--real-library", action="store_true",
                   help="count at the qubesd stand-in's socket, through the real qubesadmin")
    p.add_argument("--real-qubesd", metavar="PYTHON",
                   help="count at the REAL qubesd's socket; PYTHON has its `qubes` package")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        pol = policy_dir(tmp)
        if args.real_qubesd:
            results = {n: measure_real_qubesd(n, pol, tmp, args.real_qubesd)
                       for n in args.sizes}
        else:
            results = {n: measure(n, pol, tmp, args.real_library) for n in args.sizes}
    print("at the REAL qubesd's socket, real qubesadmin" if args.real_qubesd
          else "at the qubesd stand-in's socket, real qubesadmin" if args.real_library
          else "simulated backend's call log")
    print(f"{'qubes':>5}  " + "  ".join(f"{c:>6}" for c in COMMANDS))
    for n, counts in results.items():
        print(f"{n:>5}  " + "  ".join(f"{counts[c]:>6}" for c in COMMANDS))
    if 12 in results and 48 in results:
        print("calls(48)/calls(12): " + ", ".join(
            f"{c} {results[48][c] / results[12][c]:.2f}" for c in COMMANDS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
