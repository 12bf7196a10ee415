"""The reap timer shipped for dom0: installed by install-dom0, runs the
installed command at boot and periodically."""

from __future__ import annotations

import configparser
import subprocess
import sys

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


def test_the_reap_unit_runs_with_chosen_credentials_not_as_root():
    """Issue 15 (1): without User=/Group=/UMask= it ran as root with umask
    0022 and made the run dir's lock unusable for the services. A user of
    its own in group qubes, files group-usable; what that means at run time
    is tested by tests/installed (the unit run with what it declares)."""
    service = unit(REPO / "packaging" / "whonix-open-reap.service")["Service"]
    assert service["DynamicUser"] == "yes" and "User" not in service
    assert service["SupplementaryGroups"] == "qubes" and service["UMask"] == "0007"
    assert service["ReadWritePaths"] == "-/run/whonix-open"
    assert service["ProtectSystem"] == "strict" and service["CapabilityBoundingSet"] == ""


def test_the_tmpfiles_entry_makes_the_run_dir_and_its_lock():
    lines = [line.split() for line in
             (REPO / "packaging" / "tmpfiles-whonix-open.conf").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines == [["D", "/run/whonix-open", "2770", "root", "qubes", "-"],
                     ["f", "/run/whonix-open/.lock", "0660", "root", "qubes", "-"]]


def test_the_admin_command_does_not_import_the_broker_service():
    """Issue 19: dom0/admin took the sweep rules from dom0/service.py, the top
    of the broker; they live in dom0/ownership.py now."""
    code = ("import sys, pkgutil, importlib, whonix_open.dom0.admin as a\n"
            "for m in pkgutil.walk_packages(a.__path__, 'whonix_open.dom0.admin.'):\n"
            "    importlib.import_module(m.name)\n"
            "print('whonix_open.dom0.service' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "False\n"
