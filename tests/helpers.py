"""What every test directory needs: a generous deadline and a poll loop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

DEADLINE = 60.0  # seconds: generous, for a busy 2-core CI machine

# What dom0's whonix.RoutingStatus answers for a Whonix-Workstation behind
# sys-whonix (the schema of whonix_open.dom0.routing_status).
DOM0_STATUS_WHONIX = {
    "version": 1,
    "qube": "anon-whonix",
    "netvm": "sys-whonix",
    "netvm_is_whonix_gateway": True,
    "is_whonix_workstation": True,
    "is_disposable_template": False,
    "is_disposable": False,
    "profiles": ["offline", "tor"],
    "default_profile": "tor",
}


def wait_for(predicate: Callable[[], object], what: str, timeout: float = DEADLINE,
             interval: float = 0.02) -> object:
    """Poll until *predicate* is truthy (never a fixed sleep as the only sync);
    TimeoutError after *timeout* seconds (callers may catch it to retry)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """os.environ without qrexec, whonix-open and XDG variables, plus throwaway
    XDG directories and a marker-file root under *root*, plus *extra*."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QREXEC_", "WHONIX_OPEN_", "XDG_"))}
    env.update(XDG_CONFIG_HOME=str(root / "config"), XDG_CONFIG_DIRS=str(root / "etc-xdg"),
               XDG_DATA_HOME=str(root / "data"), XDG_STATE_HOME=str(root / "state"),
               WHONIX_OPEN_ROOT=str(root / "fsroot"))
    env.update(extra)
    return env
