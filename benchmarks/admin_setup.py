"""Benchmark of `whonix-open-admin setup` (issue 18) against the simulated
Qubes, through the real qubesadmin at the qubesd stand-in's socket.

Prints, without asserting anything:
1. setup's Admin API calls and wall time on a fresh R4.3 system with a second
   gateway (profiles offline, tor, tor2), a second run (nothing to change),
   and --undo;
2. after setup with 2 preloads per DVM template: for each profile, the Admin
   API calls of one file open (target <= 12), whether it took a preload (no
   admin.vm.Start in the open) and whether qubesd refilled the queue;
3. in a release venv (which has qubesd itself), the same against the REAL
   qubesd (tests/realqubesd/harness.py).

Run: .venv/bin/python benchmarks/admin_setup.py
     .venv-r4.3/bin/python benchmarks/admin_setup.py   # also the real qubesd
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from whonix_open.contract import SERVICE_OPEN
from whonix_open.openinvm import HEADER_SIZE
from whonix_open.sim.harness import SimQubes
from whonix_open.sim.qubesd_server import QubesdServer

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "tests" / "admin" / "scenarios" / "two-gateways.toml"
PROFILES = '[profiles.tor2]\nnetwork = "tor"\ngateway = "sys-whonix-2"\n'
DVMS = {"offline": "whonix-ws-18-offline-dvm", "tor": "whonix-ws-18-tor-dvm",
        "tor2": "whonix-ws-18-tor2-dvm"}


def env_for(sim: SimQubes, tmp: Path, server: QubesdServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QREXEC_", "WHONIX_"))}
    env.update(sim.env())
    env.pop("WHONIX_OPEN_BACKEND", None)  # the real qubesadmin
    env.update({"WHONIX_OPEN_QUBESD_SOCKET": server.socket_path,
                "WHONIX_OPEN_QREXEC_CLIENT": str(REPO / "sim" / "bin" / "qrexec-client"),
                "WHONIX_OPEN_CONFIG": str(tmp / "profiles.toml"),
                "WHONIX_OPEN_RUN_DIR": str(tmp / "run")})
    return env


def admin(env: dict[str, str], server: Any, *args: str) -> tuple[int, float, str]:
    before = len(server.calls)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(REPO / "packaging" / "whonix-open-admin"), *args],
                       env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"setup {args} failed: {r.stderr}")
    made = server.calls[before:]
    counts = dict(collections.Counter(m.removeprefix("admin.vm.") for m, _d, _a in made))
    return len(made), seconds, str(counts)


def open_one(env: dict[str, str], server: Any, profile: str) -> list[str]:
    env = {**env, "QREXEC_REMOTE_DOMAIN": "anon-whonix",
           "QREXEC_SERVICE_FULL_NAME": f"{SERVICE_OPEN}+{profile}",
           "QREXEC_SERVICE_ARGUMENT": profile, "QREXEC_REQUESTED_TARGET_TYPE": "name",
           "QREXEC_REQUESTED_TARGET": "dom0"}
    before = len(server.calls)
    r = subprocess.run([sys.executable, str(REPO / "qubes-rpc" / SERVICE_OPEN), profile],
                       input=b"report.pdf".ljust(HEADER_SIZE, b"\0") + b"%PDF small\n",
                       env=env, capture_output=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"open {profile} failed ({r.returncode}): {r.stderr.decode()}")
    return [m for m, _d, _a in server.calls[before:]]


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sim = SimQubes.create(tmp / "sim", SCENARIO)
        sim.set_fault("disposable_behaviour", "noop")
        sim.set_feature("dom0", "preload-dispvm-delay", "0")
        (tmp / "profiles.toml").write_text(PROFILES)
        server = QubesdServer(sim.dir, tmp / "qubesd.sock").start()
        try:
            env = env_for(sim, tmp, server)
            print("1. whonix-open-admin setup through the real qubesadmin "
                  f"({len(sim.qubes())} qubes, profiles offline, tor, tor2)")
            for label, args in (("setup", ["setup"]), ("second setup", ["setup"])):
                n, s, counts = admin(env, server, *args)
                print(f"   {label}: {n} Admin API calls, {s:.2f} s  {counts}")
            sim.settle()
            print("2. one file open per profile after setup (2 preloads each; target <= 12)")
            for profile, dvm in DVMS.items():
                ready = sim.preloads(dvm)
                methods = open_one(env, server, profile)
                sim.settle()
                took = "admin.vm.Start" not in methods and ready[0] not in sim.qubes()
                print(f"   {profile}: {len(methods)} calls, preload taken: "
                      f"{'yes' if took else 'NO'}, queue refilled by qubesd: "
                      f"{'yes' if len(sim.preloads(dvm)) == 2 else 'NO'}"
                      + ("" if len(methods) <= 12 else "  -- TARGET MISSED"))
            n, s, counts = admin(env, server, "setup", "--undo")
            print(f"   setup --undo: {n} Admin API calls, {s:.2f} s  {counts}")
        finally:
            server.stop()
            sim.kill_leftovers()




def real_qubesd() -> None:
    """The same against the REAL qubesd of this venv's release (a release venv:
    make release-venvs; .venv-r4.3/bin/python benchmarks/admin_setup.py)."""
    sys.path.insert(0, str(REPO))
    from tests.realqubesd.conftest import RealBroker
    from tests.realqubesd.harness import RealQubesd, has_preloads, release

    with tempfile.TemporaryDirectory() as d, RealQubesd(Path(d) / "q") as q:
        tmp = Path(d)
        q.expect_ok("admin.vm.Create.AppVM", "dom0", "whonix-gateway-18",
                    b"name=sys-whonix-2 label=purple")
        q.set_prop("sys-whonix-2", "provides_network", "True")
        q.set_prop("sys-whonix-2", "netvm", "sys-firewall")
        q.expect_ok("admin.vm.tag.Set", "sys-whonix-2", "anon-gateway")
        q.expect_ok("admin.vm.Start", "sys-whonix-2")
        q.set_feature("dom0", "preload-dispvm-delay", "0")
        broker = RealBroker(q, tmp)
        broker.config.write_text(PROFILES)
        env = {**os.environ, **broker.env(SERVICE_OPEN, "tor", "anon-whonix")}
        print(f"3. against the real qubesd ({release()}; preloads: "
              f"{'yes' if has_preloads() else 'no, R4.2'})")
        with q.counting() as proxy:
            env["WHONIX_OPEN_QUBESD_SOCKET"] = proxy.path
            # the stand-in hypervisor has no qmemman: preloads need maxmem 0
            n, s, counts = admin(env, proxy, "setup", "--preloads", "0")
            print(f"   setup: {n} Admin API calls, {s:.2f} s  {counts}")
            n, s, _ = admin(env, proxy, "setup", "--preloads", "0")
            print(f"   second setup: {n} Admin API calls, {s:.2f} s")
            if has_preloads():  # (R4.2 leaves tor on the stock DVM template: it fits)
                for dvm in DVMS.values():
                    q.set_prop(dvm, "maxmem", "0")
                admin(env, proxy, "setup", "--preloads", "2")
                for profile, dvm in DVMS.items():
                    # both paused: qubesd hands out either of them
                    ready = q.wait_until(
                        lambda d=dvm: (ps := q.preloads(d)) and len(ps) == 2 and all(
                            q.qubes()[p]["state"] == "Paused" for p in ps) and ps,
                        "two paused preloads", timeout=60)
                    methods = open_one(env, proxy, profile)
                    took = "admin.vm.Start" not in methods and not set(ready) <= set(q.qubes())
                    print(f"   {profile}: {len(methods)} calls, preload taken: "
                          f"{'yes' if took else 'NO'}")
            n, s, counts = admin(env, proxy, "setup", "--undo")
            print(f"   setup --undo: {n} Admin API calls, {s:.2f} s  {counts}")


if __name__ == "__main__":
    main()
    import importlib.util

    if importlib.util.find_spec("qubes") is not None:
        real_qubesd()
