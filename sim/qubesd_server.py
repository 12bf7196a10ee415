"""A qubesd stand-in on a Unix socket: the Admin API wire protocol over the
simulated Qubes, for the real `qubesadmin` library (tests/real/).

Wire protocol (QubesOS/qubes-core-admin qubes/api/__init__.py, client side
qubesadmin/app.py QubesLocal.qubesd_call): one connection per call; the client
sends `METHOD+ARG SRC name DEST\\0` and the payload, then shuts down writing.
The reply is `0\\0` + data, or `2\\0` + exception class `\\0` traceback (empty:
qubesd sends it only in debug mode) `\\0` message `\\0`. admin.Events answers
with event frames `1\\0` subject `\\0` event `\\0` (key `\\0` value `\\0`)* `\\0`,
`connection-established` (subject: the app, '') first, until the client hangs
up. Every call goes through sim/qubesd.py, the model SimBackend uses too.

    python -m whonix_open.sim.qubesd_server --sim-dir DIR --socket PATH
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import socketserver
import threading
import time
from pathlib import Path

from whonix_open.dom0.backend import BackendError, QubesdUnreachable
from whonix_open.sim import qubesd
from whonix_open.sim.backend import call_logged, kill_processes
from whonix_open.sim.state import SimState, StateError

EVENT_POLL = 0.02
MAX_REQUEST = 65536


def _frame_event(subject: str, event: str, kwargs: dict[str, str]) -> bytes:
    data = subject.encode() + b"\0" + event.encode() + b"\0"
    data += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in kwargs.items())
    return b"1\0" + data + b"\0"


def _frame_exception(e: BackendError) -> bytes:
    klass = getattr(e, "qubesd_class", "QubesException")
    return b"2\0" + klass.encode() + b"\0" + b"\0" + str(e).encode() + b"\0"


class _Handler(socketserver.BaseRequestHandler):
    server: QubesdServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        data = b""
        while len(data) < MAX_REQUEST:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        try:
            header, payload = data.split(b"\0", 1)
            meth_arg, src, dest_type, dest = header.decode("ascii").split(" ", 3)
            method, _, arg = meth_arg.partition("+")
        except ValueError:
            return  # qubesd: "framing error", connection aborted
        if dest_type != "name":
            return
        self.server.record(method, src, dest, arg)
        c = qubesd.Call(method, src, dest, arg, payload, processes=kill_processes)
        if method == "admin.Events":
            self._events(sock, c)
            return
        try:
            result = call_logged(self.server.state, c)
            if method == "admin.vm.Start" and result:
                time.sleep(result)  # a slow boot (start_delay fault)
                with self.server.state.transaction() as st:
                    qubesd.boot(st, dest, slow=True)
                result = None
        except qubesd.ProtocolError as e:
            # R4.2/R4.3's qubesd aborts a malformed call (no answer at all);
            # the development line (4.4) answers it with a ProtocolError frame
            if self.server.state.read().get("release") != "4.4":
                return
            reply = _frame_exception(e)
        except QubesdUnreachable:
            return  # no answer at all: qubesadmin reports an empty response
        except BackendError as e:
            reply = _frame_exception(e)
        except StateError:
            return
        else:
            reply = b"0\0" + (result if isinstance(result, str) else "").encode()
        with contextlib.suppress(OSError):
            sock.sendall(reply)

    def _events(self, sock: socket.socket, c: qubesd.Call) -> None:
        try:
            seq = call_logged(self.server.state, c)
        except QubesdUnreachable:
            return
        except BackendError as e:
            with contextlib.suppress(OSError):
                sock.sendall(_frame_exception(e))
            return
        try:
            sock.sendall(_frame_event("", "connection-established", {}))
            while not self.server.stopping.wait(EVENT_POLL):
                try:
                    st = self.server.state.read()
                except StateError:
                    return
                if st["faults"].get("qubesd_unreachable"):
                    return  # the stream breaks
                out = b""
                for e in qubesd.events_after(st, seq, c.dest):
                    seq = e["n"]
                    out += _frame_event(e["subject"], e["event"], e["kwargs"])
                if out:
                    sock.sendall(out)
                elif self._hung_up(sock):
                    return
        except OSError:
            return

    @staticmethod
    def _hung_up(sock: socket.socket) -> bool:
        # The client has shut down its writing side already (end of the
        # request); only a full close is a hang-up.
        poller = select.poll()
        poller.register(sock, 0)
        return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                   for _, ev in poller.poll(0))


class QubesdServer(socketserver.ThreadingUnixStreamServer):
    """Serves one sim directory's state on *socket_path*. `calls` lists the
    (method, dest, arg) of every call received at the socket."""

    daemon_threads = True

    def __init__(self, sim_dir: str | os.PathLike[str], socket_path: str | os.PathLike[str]):
        self.state = SimState(sim_dir)
        self.socket_path = str(socket_path)
        self.stopping = threading.Event()
        self.calls: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        super().__init__(self.socket_path, _Handler)

    def record(self, method: str, src: str, dest: str, arg: str) -> None:
        with self._lock:
            self.calls.append((method, dest, arg))

    def start(self) -> QubesdServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         name="sim-qubesd", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-dir", required=True)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    server = QubesdServer(Path(args.sim_dir), args.socket)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
