"""What every test directory needs: a generous deadline and a poll loop."""

from __future__ import annotations

import time
from collections.abc import Callable

DEADLINE = 60.0  # seconds: generous, for a busy 2-core CI machine


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
