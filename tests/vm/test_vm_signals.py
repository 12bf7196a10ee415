"""Signals through the real CLI process: a burst never hangs it, only the
first signal acts, and the kill fallback always ends a child that ignores
SIGTERM."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from pathlib import Path

from tests.helpers import DEADLINE, wait_for
from tests.vm.test_vm_editback import _alive, _big

BURST = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT) * 100  # 300 signals
INTERRUPTED = {128 + signal.SIGTERM, 128 + signal.SIGHUP, 128 + signal.SIGINT}


def _start_hanging(world, tmp_path: Path, name: str, **control):
    big = tmp_path / name
    digest = _big(big, 4 << 20)
    ready = tmp_path / f"{name}.ready"
    world.set(mode="edit", stop_reading_after=1 << 16, hang=True, ready_file=str(ready),
              **control)
    proc = world.popen("--no-notify", str(big))
    wait_for(ready.exists, "the stand-in to be mid-transfer")
    standin = int(wait_for(lambda: ready.read_text(), "the stand-in's pid"))
    return proc, big, digest, standin


def test_a_burst_of_signals_never_hangs_the_cli(world, tmp_path):
    """300 TERM/HUP/INT in a row, ten times: the handler used to re-enter
    Session.cancel and block on its own lock, so the CLI hung for ever."""
    for trial in range(10):
        proc, big, digest, standin = _start_hanging(world, tmp_path, f"big{trial}.bin")
        for signum in BURST:
            try:
                os.kill(proc.pid, signum)
            except ProcessLookupError:
                break  # already gone: nothing hung
        try:
            _out, err = proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            _end(proc, standin)
            raise AssertionError(f"trial {trial}: the CLI hung after a burst of signals") from None
        if _alive(standin):
            _end(proc, standin)
            raise AssertionError(f"trial {trial}: the CLI left qrexec-client-vm running")
        # Only the first signal acted: an orderly interruption, whichever came first.
        assert proc.returncode in INTERRUPTED, (trial, proc.returncode, err)
        assert "interrupted" in err and "Traceback" not in err, err
        assert hashlib.sha256(big.read_bytes()).digest() == digest


def _end(proc: subprocess.Popen, standin: int) -> None:
    """Clean up after a failed trial (the stand-in keeps the CLI's pipes open)."""
    for pid in (proc.pid, standin):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def test_the_kill_fallback_ends_a_child_that_ignores_sigterm(world, tmp_path):
    proc, big, digest, standin = _start_hanging(world, tmp_path, "big.bin",
                                                ignore_sigterm=True)
    proc.send_signal(signal.SIGTERM)
    for _ in range(20):  # more signals during the grace period change nothing
        proc.send_signal(signal.SIGHUP)
    try:
        _out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        _end(proc, standin)
        raise
    assert proc.returncode in INTERRUPTED, err
    assert not _alive(standin), "SIGKILLed after the grace period"
    assert hashlib.sha256(big.read_bytes()).digest() == digest
