"""Figures measured against the REAL qubesd (tests/realqubesd/harness.py):

1. Admin API calls per open, counted at qubesd's socket: tor, tor with a
   preload ready (R4.3+), offline, a link, an app.
2. 50 concurrent opens from 5 callers, 10 % of the services SIGKILLed: the
   per-qube and total caps hold, and nothing is left after one
   `whonix-open-admin reap`.

Run with a release venv (make release-venvs), e.g.
    .venv-r4.3/bin/python benchmarks/real_qubesd.py
Prints figures; exits 1 if a cap did not hold or something was left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dom0.conftest import header  # noqa: E402
from tests.realqubesd.conftest import RealBroker  # noqa: E402
from tests.realqubesd.harness import DVM, RealQubesd, has_preloads, release  # noqa: E402
from whonix_open.contract import SERVICE_APP, SERVICE_OPEN, SERVICE_URL  # noqa: E402
from whonix_open.dom0.config import Limits  # noqa: E402

CALLERS = ["anon-whonix", "anon-2", "anon-3", "anon-4", "anon-5"]
OPENS, KILLED = 50, 5


def _fresh(directory: Path) -> Path:
    """The broker's directory (its run dir goes inside), made as tmp_path is."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def calls_per_open(tmp: Path) -> None:
    print(f"## Admin API calls per open at the real qubesd's socket (qubes {release()})")
    cases = [("tor", SERVICE_OPEN, "tor", None), ("offline", SERVICE_OPEN, "offline", None),
             ("link (tor)", SERVICE_URL, "tor", b"https://www.whonix.org/\n"),
             ("app (torbrowser+tor)", SERVICE_APP, "torbrowser+tor", b"\n"),
             ("app (terminal+offline)", SERVICE_APP, "terminal+offline", b"\n")]
    if has_preloads():
        cases.insert(1, ("tor, a preload ready", SERVICE_OPEN, "tor", "preload"))
    for label, service, arg, data in cases:
        with RealQubesd(tmp / label.replace(" ", "_").replace("(", "").replace(")", "")) as q:
            if data == "preload":
                q.set_feature("dom0", "preload-dispvm-delay", "3600")
                q.set_feature(DVM, "preload-dispvm-max", "1")
                q.wait_until(lambda q=q: [p for p in q.preloads()
                                          if q.qubes()[p]["state"] == "Paused"], "a preload")
                data = None
            broker = RealBroker(q, _fresh(tmp / f"b-{label.replace(' ', '_')}"))
            with q.counting() as proxy:
                env = broker.env(service, arg, "anon-whonix")
                env["WHONIX_OPEN_QUBESD_SOCKET"] = proxy.path
                started = time.monotonic()
                r = broker.open_file(arg=arg, env=env) if data is None else \
                    broker.run(data, service=service, arg=arg, env=env)
                took = time.monotonic() - started
                calls = Counter(m for m, _, _ in proxy.calls)
            assert r.code == 0, r.err
            print(f"{label:26} {sum(calls.values()):3d} calls  {took * 1000:6.0f} ms   "
                  + ", ".join(f"{m.removeprefix('admin.')} x{n}" for m, n in calls.items()))


def add_callers(q: RealQubesd) -> None:
    for name in CALLERS[1:]:
        q.expect_ok("admin.vm.Create.AppVM", "dom0", "whonix-workstation-18",
                    f"name={name} label=red".encode())
        q.set_prop(name, "netvm", "sys-whonix")
        q.set_prop(name, "default_dispvm", DVM)
        q.expect_ok("admin.vm.Start", name)


def concurrent(tmp: Path) -> int:
    limits = Limits()
    print(f"\n## {OPENS} concurrent opens from {len(CALLERS)} callers, {KILLED} services "
          f"SIGKILLed (caps: per_qube {limits.per_qube}, total {limits.total})")
    failures = 0
    with RealQubesd(tmp / "concurrent") as q:
        add_callers(q)
        q.set_behaviour("hang")  # every opened file stays open until we end its service
        broker = RealBroker(q, _fresh(tmp / "b-concurrent"))
        procs = []
        started = time.monotonic()
        for i in range(OPENS):
            caller = CALLERS[i % len(CALLERS)]
            proc = broker.start(SERVICE_OPEN, "tor", caller)
            proc.stdin.write(header(f"from-{caller}-{i}.txt") + b"data")
            proc.stdin.close()
            procs.append((caller, proc))

        def settled() -> bool:
            return len(q.received()) + sum(p.poll() is not None for _, p in procs) >= OPENS
        q.wait_until(settled, "every open to be relayed or refused", timeout=600)
        took = time.monotonic() - started
        open_now = Counter(r["name"].split("-")[1] + "-" + r["name"].split("-")[2]
                           if r["name"].startswith("from-anon-") and
                           not r["name"].startswith("from-anon-whonix")
                           else "anon-whonix" for r in q.received())
        codes = Counter(p.returncode for _, p in procs if p.poll() is not None)
        running = [n for n, v in q.qubes().items() if v["class"] == "DispVM"
                   and v["state"] == "Running"]
        print(f"settled in {took:.1f} s: {len(q.received())} relayed at once, refused "
              f"{dict(codes)}; disposables running: {len(running)}")
        print("open per caller: " + ", ".join(f"{c} {open_now[c]}" for c in CALLERS))
        if max(open_now.values()) > limits.per_qube or len(running) > limits.total:
            print("FAIL: a cap did not hold")
            failures += 1
        live = [p for _, p in procs if p.poll() is None]
        for p in live[:KILLED]:
            p.kill()
        for p in live[KILLED:]:
            p.send_signal(signal.SIGTERM)
        for _, p in procs:
            p.wait(timeout=120)
        left = q.disposables()
        print(f"after {min(KILLED, len(live))} SIGKILLs and {max(0, len(live) - KILLED)} "
              f"SIGTERMs: {len(left)} disposables left")
        env = {**os.environ, **broker.env(SERVICE_OPEN, "tor", "anon-whonix")}
        reap = subprocess.run([sys.executable, str(REPO / "packaging" / "whonix-open-admin"),
                               "reap"], env=env, capture_output=True, text=True, timeout=300)
        left = q.disposables()
        print(f"one `whonix-open-admin reap` (exit {reap.returncode}): {len(left)} left "
              f"{left if left else ''}")
        status = subprocess.run([sys.executable, str(REPO / "packaging" / "whonix-open-admin"),
                                 "status", "--all", "--json"], env=env, capture_output=True,
                                text=True, timeout=300)
        if left or reap.returncode != 0:
            print("FAIL: something was left\n" + reap.stderr + status.stdout)
            failures += 1
    return failures


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="whonix-open-bench-") as tmp:
        calls_per_open(Path(tmp))
        return 1 if concurrent(Path(tmp)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
