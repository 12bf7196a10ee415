"""transport._receive on its own: the reply read through one reused buffer
from a non-blocking pipe, in pieces of any size and with pauses, byte for byte;
and giving up on a pipe that a leftover process keeps open."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from whonix_open.vm import transport


def _trickle(fd: int, data: bytes, pieces: list[int]) -> None:
    """Write *data* in pieces of the given sizes (cycled), pausing now and
    then so the reader finds the pipe empty, then close."""
    pos, i = 0, 0
    try:
        while pos < len(data):
            n = pieces[i % len(pieces)]
            view = memoryview(data)[pos : pos + n]
            while view:
                view = view[os.write(fd, view) :]
            pos += n
            i += 1
            if i % 7 == 0:
                time.sleep(0.002)
    finally:
        os.close(fd)


def test_receive_is_byte_identical_across_buffer_and_pause_boundaries(tmp_path: Path) -> None:
    data = os.urandom(3 * transport.RECV_BUFFER + 12345)
    r, w = os.pipe()
    writer = threading.Thread(target=_trickle, args=(w, data, [1, 4095, 65537, 300_000]))
    writer.start()
    out = tmp_path / "reply"
    with open(out, "wb") as sink:
        total, eof = transport._receive(r, sink.fileno(), lambda: False)
    writer.join()
    os.close(r)
    assert (total, eof) == (len(data), True)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_receive_discards_without_a_sink() -> None:
    data = b"x" * (transport.RECV_BUFFER + 1)
    r, w = os.pipe()
    writer = threading.Thread(target=_trickle, args=(w, data, [70_000]))
    writer.start()
    total, eof = transport._receive(r, None, lambda: False)
    writer.join()
    os.close(r)
    assert (total, eof) == (len(data), True)


def test_receive_gives_up_on_a_pipe_held_open(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.write(w, b"partial")
    gave_up = threading.Event()
    threading.Timer(0.3, gave_up.set).start()
    with open(tmp_path / "reply", "wb") as sink:
        total, eof = transport._receive(r, sink.fileno(), gave_up.is_set)
    os.close(w)
    os.close(r)
    assert (total, eof) == (7, False)
    assert (tmp_path / "reply").read_bytes() == b"partial"
