"""whonix-open-admin through the real, unmodified qubesadmin library: the
installed launcher as dom0 runs it (WHONIX_OPEN_BACKEND unset = qubesadmin)
against the qubesd stand-in (sim/qubesd_server.py) on a Unix socket, with the
real qrexec parser for the policy. The same expectations as the simulation
tier, and the Admin API calls counted at the socket."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.admin.conftest import REPO, Admin
from tests.helpers import DEADLINE, wait_for
from tests.real.conftest import INSTALL, MISSING, RealBroker
from whonix_open.sim.qubesd_server import QubesdServer

LAUNCHER = [sys.executable, str(REPO / "packaging" / "whonix-open-admin")]


@dataclass
class Real:
    admin: Admin
    qubesd: QubesdServer

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in self.admin.env().items() if k != "WHONIX_OPEN_BACKEND"}
        env["WHONIX_OPEN_QUBESD_SOCKET"] = self.qubesd.socket_path
        return subprocess.run([*LAUNCHER, *args], env=env, capture_output=True, text=True,
                              timeout=DEADLINE, check=False)

    def check(self, *extra: str) -> tuple[int, dict]:
        r = self.run("check", "--json", "--policy-dir", str(self.admin.policy), *extra)
        assert r.stderr == "", r.stderr
        return r.returncode, json.loads(r.stdout)

    def broker(self) -> RealBroker:
        return RealBroker(self.admin.sim, self.admin.tmp, self.qubesd)


@pytest.fixture
def real(make_admin) -> Iterator:
    if MISSING:
        pytest.fail(f"missing {', '.join(MISSING)}: {INSTALL}", pytrace=False)
    servers: list[QubesdServer] = []

    def make(scenario: str = "default") -> Real:
        admin = make_admin(scenario)
        # A separate process: 35-compat.policy would need /etc/qubes-rpc/policy
        # (the in-process tests point qrexec elsewhere); the rest is dom0's.
        (admin.policy / "35-compat.policy").unlink()
        servers.append(QubesdServer(admin.sim.dir, admin.tmp / "qubesd.sock").start())
        return Real(admin, servers[-1])

    yield make
    for server in servers:
        server.stop()


def problems(data: dict) -> list[dict]:
    return [f for f in data["findings"] if f["level"] != "PASS"]


def test_check_passes_a_correct_setup(real):
    r = real()
    code, data = r.check()
    assert code == 0 and problems(data) == []
    assert {f["check"] for f in data["findings"]} >= {"profile", "dvm-netvm", "containment",
                                                      "policy", "orphan"}


@pytest.mark.parametrize("scenario, check", [("dvm-clearnet", "dvm-netvm"),
                                             ("nested-dispvm", "anon-default-dispvm"),
                                             ("orphan", "unproven")])  # no record: WARN
def test_check_finds_the_same_problems_as_on_the_simulation(real, scenario, check):
    r = real(scenario)
    code, data = r.check()
    sim_code = r.admin.check()  # the same system through the simulated backend
    assert code == (0 if check == "unproven" else 1)
    assert [f["check"] for f in problems(data)] == [check]
    assert data["findings"] == sim_code.json()["findings"]


def test_status_and_reap_after_a_killed_real_broker(real):
    r = real()
    r.admin.sim.set_fault("disposable_behaviour", "hang")
    proc = r.broker().start(arg="offline")
    proc.stdin.write(b"report.pdf".ljust(256, b"\0") + b"data")
    proc.stdin.flush()
    disp = wait_for(lambda: [s["qube"] for s in r.admin.sim.services()], "the relay")[0]
    status = json.loads(r.run("status", "--json").stdout)["sessions"]
    assert [(s["caller"], s["profile"], s["network"], s["disposables"][0]["name"])
            for s in status] == [("anon-whonix", "offline", "offline", disp)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=DEADLINE)  # its pipes stay open in the disposable side
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()
    dry = r.run("reap", "--dry-run")
    assert dry.returncode == 0 and f"{disp}: would remove" in dry.stdout
    assert disp in r.admin.sim.disposables()
    done = r.run("reap", "--json")
    assert done.returncode == 0
    assert [a["result"] for a in json.loads(done.stdout)["actions"]] == ["removed"]
    assert disp not in r.admin.sim.disposables()


def test_policy_explain(real):
    r = real()
    out = r.run("policy", "explain", "anon-whonix", "qubes.OpenInVM", "--policy-dir",
                str(r.admin.policy))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == \
        "qubes.OpenInVM+ -> @dispvm: ASK -> @dispvm:whonix-workstation-18-dvm"


def _documented_costs() -> tuple[dict[str, int], dict[str, int]]:
    """docs/ADMIN.md "What it costs qubesd": ({command: calls}, {check's method: calls})."""
    text = " ".join((REPO / "docs" / "ADMIN.md").read_text().split())
    text = text[text.index("What it costs qubesd"):]
    command = r"`(check|status|reap|policy)(?: explain)?` (\d+)"
    totals = {name: int(n) for name, n in re.findall(command, text)}
    start = text.index("Admin API calls (")
    breakdown = text[start:text.index(";", start)]
    return totals, {method: int(n) for n, method in re.findall(r"(\d+) `([\w.]+)`", breakdown)}


def test_calls_per_command_at_the_socket(real, capsys):
    """What each command costs qubesd, as docs/ADMIN.md states it (no target:
    the doc is held to the measure)."""
    r = real()
    totals, check_methods = _documented_costs()
    for args in (["check", "--policy-dir", str(r.admin.policy)], ["status"], ["reap"],
                 ["policy", "explain", "anon-whonix", "--policy-dir", str(r.admin.policy)]):
        before = len(r.qubesd.calls)
        assert r.run(*args).returncode == 0
        made = r.qubesd.calls[before:]
        counted = dict(collections.Counter(m for m, _d, _a in made))
        with capsys.disabled():
            print(f"\n{args[0]}: {len(made)} calls for {len(r.admin.sim.qubes())} qubes: "
                  f"{counted}")
        assert made, "every command reads qubesd"
        assert totals[args[0]] == len(made), f"docs/ADMIN.md: {args[0]} costs {len(made)}"
        if args[0] == "check":
            documented = {next((m for m in counted if m.endswith(short)), short): n
                          for short, n in check_methods.items()}
            assert documented == counted, f"docs/ADMIN.md: check makes {counted}"


def test_setup_then_opens_take_preloads_and_undo_restores(real, capsys):
    """setup and --undo through the real qubesadmin (qvm-create's
    add_new_vm, property/feature/tag writes, property_list, del domains[]),
    and the broker with the real library after it: offline and tor2 each
    take a preload, with no admin.vm.Start in the open."""
    from tests.admin.test_setup import MY_PROFILES, OFFLINE_DVM, TOR2_DVM, system

    r = real("two-gateways")
    r.admin.config.write_text(MY_PROFILES)
    r.admin.sim.set_feature("dom0", "preload-dispvm-delay", "0")
    r.check()  # every qube read once
    before, text = system(r.admin), r.admin.config.read_text()
    calls = len(r.qubesd.calls)
    dry = r.run("setup", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert not [c for c in r.qubesd.calls[calls:] if not c[0].endswith(
        ("List", "Get", "GetAll", "CheckWithTemplate", "CurrentState"))]
    calls = len(r.qubesd.calls)
    done = r.run("setup")
    assert done.returncode == 0, done.stderr
    made = r.qubesd.calls[calls:]
    planned = [c for c in json.loads(dry.stdout)["changes"] if c["call"]]
    assert [(m, d, a) for m, d, a in made if m in {c["call"] for c in planned}] == \
        [(c["call"], "dom0" if c["call"] == "admin.vm.Create.AppVM" else c["qube"], c["arg"])
         for c in planned]
    with capsys.disabled():
        print(f"\nsetup (real qubesadmin): {len(made)} calls for {len(planned)} changes: "
              f"{dict(collections.Counter(m for m, _d, _a in made))}")
    again = r.run("setup")
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "nothing to change"
    r.admin.sim.settle()
    for profile, dvm in (("offline", OFFLINE_DVM), ("tor2", TOR2_DVM)):
        ready = r.admin.sim.preloads(dvm)
        start = len(r.qubesd.calls)
        result = r.broker().open_file(arg=profile)
        assert result.code == 0, result.err
        opened = r.qubesd.calls[start:]
        methods = [m for m, _d, _a in opened]
        assert "admin.vm.Start" not in methods and len(opened) <= 12, methods
        used = [d for m, d, _a in opened if m == "admin.vm.Kill"]
        assert used == [ready[0]]  # the preload it was handed, nothing else
        with capsys.disabled():
            print(f"{profile} open after setup (real qubesadmin): {len(opened)} calls")
        r.admin.sim.settle()
        assert len(r.admin.sim.preloads(dvm)) == 2  # refilled by qubesd
    undo = r.run("setup", "--undo")
    assert undo.returncode == 0, undo.stderr
    assert system(r.admin) == before and r.admin.config.read_text() == text
