"""The reap timer shipped for dom0: installed by install-dom0, runs the
installed command at boot and periodically."""

from __future__ import annotations

import configparser
import subprocess

from tests.admin.conftest import REPO


def unit(path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def test_install_dom0_ships_the_timer_that_runs_reap(tmp_path):
    subprocess.run(["make", "-s", "-C", str(REPO), "install-dom0", f"DESTDIR={tmp_path}"],
                   check=True, capture_output=True)
    units = tmp_path / "usr/lib/systemd/system"
    service = unit(units / "whonix-open-reap.service")
    timer = unit(units / "whonix-open-reap.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == "/usr/bin/whonix-open-admin reap"
    assert service["Unit"]["After"] == "qubesd.service"
    assert timer["Timer"]["OnBootSec"] and timer["Timer"]["OnUnitActiveSec"]
    assert timer["Install"]["WantedBy"] == "timers.target"
