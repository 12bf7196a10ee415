"""whonix-open-app, dom0's own entry point (its menu entries): the same broker
path as a qube's whonix.StartAppInDisposable, with dom0 as the caller."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.dom0.test_links_apps import launched
from tests.dom0.test_open_service import finish
from tests.helpers import DEADLINE, wait_for
from whonix_open.contract import Exit


def _env(broker) -> dict[str, str]:
    env = broker.env("unused", "", "unused")
    return {k: v for k, v in env.items() if not k.startswith("QREXEC_")}


def _start(broker, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "whonix_open.dom0.launch", *args],
                            env=_env(broker), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_tor_browser_from_dom0_runs_in_a_checked_tor_disposable(broker, sim):
    proc = _start(broker, "torbrowser")
    err = finish(proc)
    assert proc.returncode == Exit.OK, err
    (got,) = launched(sim)
    assert got["app"] == "janondisttorbrowser.desktop"
    assert "caller=dom0 service=whonix.StartAppInDisposable profile=tor" in err
    assert "network=sys-whonix" in err
    assert sim.disposables() == []


def test_an_app_outside_the_allowlist_is_77_and_says_so(broker, sim):
    proc = _start(broker, "xterm")
    err = finish(proc)
    assert proc.returncode == Exit.APP_NOT_ALLOWED
    assert "whonix-open-app: xterm (tor): the app is not in the allowlist" in err
    assert sim.calls() == []


def test_bad_names_are_usage_errors(broker, sim):
    for args in (["Tor Browser"], ["--profile", "Tor", "terminal"]):
        proc = _start(broker, *args)
        finish(proc)
        assert proc.returncode == 2
    assert sim.calls() == []


def test_closing_the_command_kills_the_apps_disposable(broker, sim):
    sim.set_fault("disposable_behaviour", "hang")
    proc = _start(broker, "--profile", "offline", "terminal")
    try:
        wait_for(lambda: launched(sim), "the terminal to start", DEADLINE)
        assert len(sim.disposables()) == 1
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == Exit.INTERNAL and "terminated by signal" in err
    assert "network=offline" in err
    assert sim.disposables() == []
