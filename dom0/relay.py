"""Hand the caller's stream to the disposable's qubes.OpenInVM and watch it.

dom0 never touches the bytes: the caller's stdin and stdout file descriptors
become the stdin and stdout of the qrexec call into the disposable (for
view-only, stdout is /dev/null, so nothing the disposable sends can reach the
caller). This process only waits for one of:

- the call ends (the viewer was closed)            -> OK, or DISPOSABLE_FAILED
- the netvm watcher fires (set, reset, or broken)  -> NETVM_CHANGED
- the caller hangs up                                -> INTERNAL, "caller went away"
- the session's lifetime ends                        -> SESSION_EXPIRED
- a signal (handled by the service: it raises)

Before any disposable exists, `wait_for_caller` waits (poll, never read) for
the caller's stream: qrexec-daemon starts a dom0 service before the caller's
data connection is there, and one that never comes must cost no disposable.

A dom0 service's stdout is a socketpair end held by qrexec-daemon, which
forks a qube's call to dom0 itself (daemon/qrexec-daemon.c run_qrexec_to_dom0,
libqrexec exec.c do_fork_exec). When the caller's connection goes away, it
only shutdown()s it (process_io.c close_stdout: SHUT_RD) and waits for us:
poll() reports nothing for that, so a zero-byte send is tried
every PROBE_INTERVAL_MS (EPIPE = gone). A pipe (tests) reports POLLERR.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import stat
import subprocess
import termios
import time

from whonix_open.contract import Exit
from whonix_open.dom0.backend import Backend, Relay
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.relay_target import RelayTarget

GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL
PROBE_INTERVAL_MS = 1000


class NetvmAlarm:
    """A pipe the netvm watcher (any thread) pokes; the relay loop polls it."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.write_fd, b"!")

    def fired(self) -> bool:
        try:
            return bool(os.read(self.read_fd, 64))
        except BlockingIOError:
            return False

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def wait_for_caller(fd: int, timeout: float) -> None:
    """Return once the caller's stream has data; Refusal(CALLER_SILENT) if it
    ends first or nothing comes within *timeout* seconds. Nothing is read:
    FIONREAD tells data from end-of-file."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ready = poller.poll(int(timeout * 1000))
    if not ready:
        raise Refusal(Exit.CALLER_SILENT, f"the caller sent nothing within {timeout:g} s")
    pending = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, pending)
    except OSError:
        pending = bytearray(4)
    if int.from_bytes(pending, "little") == 0:
        raise Refusal(Exit.CALLER_SILENT, "the caller hung up before sending anything")


def _stop(proc: Relay) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def relay(backend: Backend, name: str, alarm: NetvmAlarm, target: RelayTarget, *,
          caller_in: int, caller_out: int, connect_timeout: int, deadline: float) -> Exit:
    """Run target.service (qubes.OpenInVM, or OpenURL/StartApp+ID for links
    and apps) in *name* on the caller's descriptors until it ends (or until
    *deadline*, a time.monotonic() value). A side the target withholds from
    the disposable (its output for view-only, the stream for an app) is
    /dev/null instead."""
    if alarm.fired():
        raise Refusal(Exit.NETVM_CHANGED,
                      f"netvm of {name} changed before {target.what} was relayed to it")
    devnull = []
    if not target.pass_input:
        devnull.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    stdin = caller_in if target.pass_input else devnull[-1]
    if target.discard_output:
        devnull.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
    stdout = devnull[-1] if target.discard_output else caller_out
    try:
        proc = backend.run_service(name, target.service, stdin=stdin, stdout=stdout,
                                   connect_timeout=connect_timeout)
    finally:
        for fd in devnull:
            os.close(fd)
    try:
        return _supervise(proc, name, alarm, caller_out, deadline, target)
    finally:
        _stop(proc)


class _HangupProbe:
    """Tells whether the caller's end of our stdout is gone."""

    def __init__(self, fd: int) -> None:
        self.sock = None
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            import socket  # only a real qrexec connection needs it

            self.sock = socket.socket(fileno=os.dup(fd))
            self.flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL

    def gone(self, revents: int) -> bool:
        if revents & GONE:
            return True
        if self.sock is None:
            return False
        try:
            self.sock.send(b"", self.flags)
        except BlockingIOError:
            return False
        except OSError:  # EPIPE after the peer's shutdown, ECONNRESET, ...
            return True
        return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def _supervise(proc: Relay, name: str, alarm: NetvmAlarm, caller_out: int,
               deadline: float, target: RelayTarget) -> Exit:
    pidfd = os.pidfd_open(proc.pid)
    probe = _HangupProbe(caller_out)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(alarm.read_fd, select.POLLIN)
        poller.register(caller_out, 0)  # mask 0: only errors/hangups are reported
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise Refusal(Exit.SESSION_EXPIRED,
                              f"{name} reached the session's maximum lifetime")
            ready = dict(poller.poll(min(PROBE_INTERVAL_MS, left_ms)))
            if alarm.read_fd in ready and alarm.fired():
                raise Refusal(Exit.NETVM_CHANGED,
                              f"netvm of {name} was changed (or could no longer be "
                              f"watched) while {target.what} was open")
            if pidfd in ready:
                code = proc.wait()
                if code != 0:
                    raise Refusal(Exit.DISPOSABLE_FAILED,
                                  f"{target.service} in {name} failed with exit code {code}")
                return Exit.OK
            if probe.gone(ready.get(caller_out, 0)):
                raise Refusal(Exit.INTERNAL, "the caller went away")
    finally:
        probe.close()
        os.close(pidfd)
