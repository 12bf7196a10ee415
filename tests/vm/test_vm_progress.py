"""Progress lines: on a terminal for big files, never otherwise."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time

from tests.helpers import DEADLINE, wait_for


def _read_until(fd: int, needle: bytes, timeout: float = DEADLINE) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} in {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
    return seen


def test_progress_on_a_terminal_for_a_big_file(world, tmp_path):
    big = tmp_path / "big.iso"
    big.write_bytes(b"\0" * (32 << 20))
    ready = tmp_path / "ready"
    world.set(stop_reading_after=4 << 20, hang=True, ready_file=str(ready))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        world.cli_argv(str(big)), env=world.env, stdin=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    try:
        wait_for(ready.exists, "the stand-in to stall the transfer")
        seen = _read_until(master, b"MiB sent")
        assert b"big.iso: " in seen and b"% of 32 MiB sent" in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 128 + signal.SIGTERM
        assert world.notifications() == [], "a terminal gets no notifications"
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_no_progress_when_stderr_is_not_a_terminal(world, tmp_path):
    big = tmp_path / "big.iso"
    big.write_bytes(b"\0" * (32 << 20))
    result = world.run("--no-notify", str(big))
    assert result.returncode == 0
    assert "MiB sent" not in result.stderr and "\r" not in result.stderr
