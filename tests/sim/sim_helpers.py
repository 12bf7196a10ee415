"""Helpers for the simulated Qubes' tests: the caller's header and real pipes."""

from __future__ import annotations

import os
import threading

from whonix_open.openinvm import HEADER_SIZE, VIEW_ONLY_PREFIX
from whonix_open.sim.backend import SimBackend


def header(name: bytes, view_only: bool = False) -> bytes:
    """The caller's 256-byte qubes.OpenInVM header for *name*."""
    raw = (VIEW_ONLY_PREFIX if view_only else b"") + name
    assert len(raw) < HEADER_SIZE
    return raw + b"\0" * (HEADER_SIZE - len(raw))


class Stream:
    """Real pipes into and out of a disposable-side process."""

    def __init__(self) -> None:
        self.child_in, self._to_child = os.pipe()
        self._from_child, self.child_out = os.pipe()
        self.reply = b""
        self._reader: threading.Thread | None = None

    def started(self) -> None:
        """The child has its copies: close ours, start reading its output."""
        os.close(self.child_in)
        os.close(self.child_out)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        chunks = []
        while chunk := os.read(self._from_child, 1 << 16):
            chunks.append(chunk)
        self.reply = b"".join(chunks)
        os.close(self._from_child)

    def send(self, data: bytes, close: bool = True) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._to_child, view):]
        except BrokenPipeError:
            pass
        if close:
            self.close_input()

    def close_input(self) -> None:
        if self._to_child >= 0:
            os.close(self._to_child)
            self._to_child = -1

    def finish(self, timeout: float = 10) -> bytes:
        assert self._reader is not None
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "the child's output never ended"
        return self.reply


def open_in(backend: SimBackend, qube: str, data: bytes, *, close: bool = True,
            service: str = "qubes.OpenInVM"):
    """Run qubes.OpenInVM in *qube* with real pipes and send *data*;
    (process, stream)."""
    stream = Stream()
    proc = backend.run_service(qube, service, stdin=stream.child_in,
                               stdout=stream.child_out, connect_timeout=7)
    stream.started()
    stream.send(data, close=close)
    return proc, stream


def running_disposable(backend: SimBackend, dvm: str = "whonix-workstation-18-dvm") -> str:
    name = backend.create_disposable(dvm)
    backend.start(name)
    return name
