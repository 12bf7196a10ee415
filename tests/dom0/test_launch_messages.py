"""whonix-open-app tells a dom0 user one line, and a desktop notification only
where one can be shown: no notifier noise on a terminal without a display
(issue 19; without qubesadmin: tests/packaging/test_pip_install.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.dom0.test_open_service import finish
from whonix_open.contract import Exit


def test_a_refusal_is_one_line_and_no_notifier_noise_without_a_display(broker, sim):
    if shutil.which("notify-send") is None:  # .ci/install-system-deps installs it
        pytest.fail("notify-send (libnotify-bin) is not installed")
    env = {k: v for k, v in broker.env("unused", "", "unused").items()
           if not k.startswith("QREXEC_")
           and k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-m", "whonix_open.dom0.launch", "xterm"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    err = finish(proc)
    assert proc.returncode == Exit.APP_NOT_ALLOWED
    assert err.splitlines()[-1] == (
        "whonix-open-app: xterm (tor): the app is not in the allowlist ([apps] in "
        "profiles.toml) (exit 77; journalctl -t whonix-open)")
    assert all(line.startswith(("whonix-open: ", "whonix-open-app: "))
               for line in err.splitlines()), err
