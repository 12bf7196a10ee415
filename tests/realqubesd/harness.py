"""The REAL qubesd (unmodified `qubes` package of a Qubes release) on a
temporary qubes.xml, with only the hypervisor replaced (qubesd_main.py).

Use it from a release venv (`make release-venvs`: .venv-r4.2, .venv-r4.3,
.venv-dev each hold that release's qubes, qubesadmin and qrexec):

    from tests.realqubesd.harness import RealQubesd

    with RealQubesd(tmp_path / "qubesd") as qubesd:   # or the `real_qubesd` fixture
        qubesd.socket_path          # the Admin API socket (QUBESD_SOCKET of qubesadmin)
        qubesd.python               # the release's Python (this venv's)
        qubesd.call("admin.vm.List", "dom0")        # raw reply bytes
        qubesd.broker_env()         # what a service process needs to use it:
                                    # WHONIX_OPEN_BACKEND=qubesadmin, the socket,
                                    # dom0's qrexec-client stand-in
        qubesd.services()           # calls that reached a disposable (sim.services())
        qubesd.counting()           # a proxy socket that records every call

qubesd runs as root when we are root, as on dom0 (then group `qubes` needs a
member: .ci/install-system-deps makes one), in its own mount namespace with a
private tmpfs on /run/qubes (qubesd keeps volume state and looks for
qrexec-daemon sockets there, at fixed paths). Starting takes ~1 s.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import DEADLINE, wait_for
from whonix_open.sim.scenario import default_faults
from whonix_open.sim.state import SimState, empty_state

HERE = Path(__file__).resolve().parent
MAIN = HERE / "qubesd_main.py"
QREXEC_CLIENT = HERE / "bin" / "qrexec-client"
START_TIMEOUT = 60.0
DVM = "whonix-workstation-18-dvm"
_STORES: dict[str, Path] = {}  # python -> a made store to copy


class QubesdFailed(RuntimeError):
    pass


def release() -> str:
    """The Qubes release whose qubesd this venv holds: '4.2.39', ..."""
    from importlib.metadata import version

    return version("qubes")


def has_preloads() -> bool:
    """R4.3 and later preload disposables (qubes/vm/mix/dvmtemplate.py)."""
    return tuple(int(x) for x in release().split(".")[:2]) >= (4, 3)


def raw_call(socket_path: str, method: str, dest: str, arg: str = "",
             payload: bytes = b"", src: str = "dom0") -> bytes:
    """One Admin API call as qubesadmin's QubesLocal makes it; the raw reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(socket_path)
        s.sendall(f"{method}+{arg} {src} name {dest}\0".encode() + payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


class RealQubesd:
    def __init__(self, directory: str | os.PathLike[str], python: str = sys.executable,
                 running: tuple[str, ...] | None = None) -> None:
        self.dir = Path(directory)
        self.python = python
        self.socket_path = str(self.dir / "qubesd.sock")
        self.side = self.dir / "side"  # what the simulated disposable side records
        self._running = running
        self._proc: subprocess.Popen | None = None
        self._log = self.dir / "qubesd.log"

    # --- lifecycle ------------------------------------------------------------

    def __enter__(self) -> RealQubesd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        return {**os.environ, "WHONIX_OPEN_REALQUBESD_DIR": str(self.dir),
                "WHONIX_OPEN_REALQUBESD_SIDE": str(self.side),
                "WHONIX_OPEN_REALQUBESD_PYTHON": self.python}

    def start(self) -> RealQubesd:
        if os.getuid() == 0:
            try:
                members = grp.getgrnam("qubes").gr_mem
            except KeyError:
                members = []
            if not members:
                raise QubesdFailed("qubesd as root needs group `qubes` with a member (as in "
                                   "dom0): run .ci/install-system-deps (make system-deps)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.side.mkdir(exist_ok=True)
        SimState(self.side).initialise(empty_state({}, default_faults()))
        self._make_store()
        serve = [self.python, str(MAIN), "serve", str(self.dir)]
        # A private /run/qubes per qubesd (see the module docstring).
        inner = ("mkdir -p /run/qubes && mount -t tmpfs -o mode=0775 whonix-open-qubesd "
                 '/run/qubes && exec "$@"')
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                inner, "sh", *serve]
        if os.getuid() != 0:
            argv[1:1] = ["--user", "--map-root-user"]
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          env=self.env(), start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise QubesdFailed(f"qubesd did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        from tests.realqubesd.qubesd_main import RUNNING

        self.set_prop(DVM, "maxmem", "0")  # see qubesd_main.py: no qmemman
        for name in RUNNING if self._running is None else self._running:
            self.expect_ok("admin.vm.Start", name)
        return self

    def _make_store(self) -> None:
        """qubes.xml and the qubes' files, made once per process and release by
        the real qubes.Qubes app (qubesd_main.py create), then copied (sparse)."""
        made = _STORES.get(self.python)
        if made is None:
            made = Path(tempfile.mkdtemp(prefix="whonix-open-qubes-xml-"))
            atexit.register(shutil.rmtree, made, True)
            done = subprocess.run([self.python, str(MAIN), "create", str(made)],
                                  capture_output=True, text=True, env=self.env())
            if done.returncode:
                raise QubesdFailed(f"making qubes.xml failed:\n{done.stderr[-3000:]}")
            _STORES[self.python] = made
        for entry in made.iterdir():
            subprocess.run(["cp", "-a", "--sparse=always", str(entry), str(self.dir)],
                           check=True)
        xml = self.dir / "qubes.xml"  # the pools' dir_path names the directory
        xml.write_text(xml.read_text().replace(str(made), str(self.dir)))

    def _answers(self) -> bool:
        try:
            return raw_call(self.socket_path, "admin.vm.List", "dom0").startswith(b"0\0")
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """Disposable-side processes a test left running on purpose."""
        with contextlib.suppress(Exception):
            for pids in SimState(self.side).read()["processes"].values():
                for pid, _ in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- talking to it --------------------------------------------------------

    def call(self, method: str, dest: str, arg: str = "", payload: bytes = b"",
             src: str = "dom0") -> bytes:
        return raw_call(self.socket_path, method, dest, arg, payload, src)

    def expect_ok(self, method: str, dest: str, arg: str = "", payload: bytes = b"") -> str:
        reply = self.call(method, dest, arg, payload)
        if not reply.startswith(b"0\0"):
            raise QubesdFailed(f"{method}+{arg} on {dest}: {reply!r}\n{self.log()[-2000:]}")
        return reply[2:].decode()

    def prop(self, qube: str, name: str) -> str:
        """A property's value text ('' = None)."""
        return self.expect_ok("admin.vm.property.Get", qube, name).split(" ", 2)[2]

    def set_prop(self, qube: str, name: str, value: str) -> None:
        self.expect_ok("admin.vm.property.Set", qube, name, value.encode())

    def set_feature(self, qube: str, key: str, value: str) -> None:
        self.expect_ok("admin.vm.feature.Set", qube, key, value.encode())

    def feature(self, qube: str, key: str) -> str | None:
        reply = self.call("admin.vm.feature.Get", qube, key)
        return reply[2:].decode() if reply.startswith(b"0\0") else None

    def qubes(self) -> dict[str, dict[str, str]]:
        """admin.vm.List: name -> {class, state, uuid}."""
        out = {}
        for line in self.expect_ok("admin.vm.List", "dom0").splitlines():
            name, *fields = line.split(" ")
            out[name] = dict(f.split("=", 1) for f in fields)
        return out

    def disposables(self) -> list[str]:
        return sorted(n for n, q in self.qubes().items() if q["class"] == "DispVM")

    def preloads(self, dvm: str = DVM) -> list[str]:
        return (self.feature(dvm, "preload-dispvm") or "").split()

    def wait_until(self, predicate: Any, what: str, timeout: float = DEADLINE) -> Any:
        return wait_for(predicate, what, timeout)

    # --- the disposable side ----------------------------------------------------

    def services(self) -> list[dict[str, Any]]:
        return SimState(self.side).read()["services"]

    def received(self) -> list[dict[str, Any]]:
        return SimState(self.side).read()["received"]

    def set_behaviour(self, behaviour: str) -> None:
        """What the simulated disposable side does (sim's disposable_behaviour)."""
        with SimState(self.side).transaction() as st:
            st["faults"]["disposable_behaviour"] = behaviour

    def broker_env(self) -> dict[str, str]:
        """What a dom0 service process needs to use this qubesd."""
        return {"WHONIX_OPEN_BACKEND": "qubesadmin",
                "WHONIX_OPEN_QUBESD_SOCKET": self.socket_path,
                "WHONIX_OPEN_QREXEC_CLIENT": str(QREXEC_CLIENT),
                "WHONIX_OPEN_REALQUBESD_DIR": str(self.dir),
                "WHONIX_OPEN_REALQUBESD_SIDE": str(self.side),
                "WHONIX_OPEN_REALQUBESD_PYTHON": self.python}

    @contextlib.contextmanager
    def counting(self) -> Iterator[CountingProxy]:
        """A socket in front of qubesd that records each call's (method, dest, arg)."""
        proxy = CountingProxy(self.socket_path, str(self.dir / "counted.sock"))
        try:
            yield proxy
        finally:
            proxy.close()


class CountingProxy:
    """Forwards each connection to qubesd; `calls` lists (method, dest, arg) of
    each, read from the request header (qubesadmin: one connection per call)."""

    def __init__(self, target: str, path: str) -> None:
        self.target, self.path = target, path
        self.calls: list[tuple[str, str, str]] = []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(path)
        self._server.listen(64)
        self._closed = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX) as up:
            up.connect(self.target)
            header = b""
            while b"\0" not in header:
                chunk = client.recv(4096)
                if not chunk:
                    break
                header += chunk
            meth_arg, _src, _kind, dest = header.split(b"\0", 1)[0].decode().split(" ", 3)
            method, _, arg = meth_arg.partition("+")
            with self._lock:
                self.calls.append((method, dest, arg))
            up.sendall(header)

            def upstream() -> None:
                with contextlib.suppress(OSError):
                    while chunk := client.recv(65536):
                        up.sendall(chunk)
                    up.shutdown(socket.SHUT_WR)

            threading.Thread(target=upstream, daemon=True).start()
            with contextlib.suppress(OSError):
                while chunk := up.recv(65536):
                    client.sendall(chunk)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
