"""SIGTERM, SIGHUP and SIGINT unwind the broker through its cleanup.

The first of them raises `Terminated` in the main thread, so it runs through
the same `finally` blocks as any error; later ones are ignored so they cannot
cut that cleanup short. `deferred()` holds them back across a step that must
not be split - a disposable that qubesd created but whose name was not yet
recorded would be left behind by nobody's fault.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Terminated(BaseException):
    """A signal asked us to stop (BaseException: no `except Exception` eats it)."""


def _on_signal(signum: int, _frame: object) -> None:
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


def install() -> None:
    for s in SIGNALS:
        signal.signal(s, _on_signal)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Block the signals for the duration; one that arrived meanwhile is
    delivered (and raises Terminated) right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
