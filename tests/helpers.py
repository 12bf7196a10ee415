"""What every test directory needs: a generous deadline and a poll loop."""

from __future__ import annotations

import time
from collections.abc import Callable

DEADLINE = 60.0  # seconds: generous, for a busy 2-core CI machine


def wait_for(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    """Poll until *predicate* is truthy (never a fixed sleep as the only sync)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
