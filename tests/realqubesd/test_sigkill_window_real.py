"""Issue 15 (5) against the REAL qubesd (R4.3 and later): a service SIGKILLed
while qubesd executes its admin.vm.CreateDisposable. qubesd finishes the call
anyway (it is not cancellable: qubes/api/__init__.py) and hands out a
running, networked preload whose name the dead service never read. Nothing
can prove it is this service's - it looks like one of qrexec's own @dispvm
disposables - so the next request and `reap` leave it, `check` names it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.dom0.conftest import REPO, header
from tests.helpers import DEADLINE, wait_for
from tests.realqubesd.harness import DVM, has_preloads
from whonix_open.contract import SERVICE_OPEN


class HoldingProxy:
    """In front of qubesd: every call is forwarded; the reply to
    CreateDisposable is never passed back (the service waits for it)."""

    def __init__(self, target: str, path: Path) -> None:
        self.target, self.path = target, str(path)
        self.created = threading.Event()
        self.held: list[socket.socket] = []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.path)
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        request = b""
        while chunk := client.recv(65536):
            request += chunk
        with socket.socket(socket.AF_UNIX) as upstream:
            upstream.connect(self.target)
            upstream.sendall(request)
            upstream.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := upstream.recv(65536):
                reply += chunk
        if request.startswith(b"admin.vm.CreateDisposable+"):
            self.held.append(client)  # done in qubesd; the answer never arrives
            self.created.set()
            return
        with contextlib.suppress(OSError):
            client.sendall(reply)
        client.close()

    def close(self) -> None:
        self.server.close()
        for c in self.held:
            c.close()


def _admin(broker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **broker.env(SERVICE_OPEN, "tor", "anon-whonix")}
    return subprocess.run([sys.executable, str(REPO / "packaging" / "whonix-open-admin"),
                           *args], env=env, capture_output=True, text=True, timeout=120)


if has_preloads():  # R4.3 and later
    def test_sigkill_inside_create_disposable_leaves_an_unproven_preload(broker, real_qubesd,
                                                                        tmp_path):
        q = real_qubesd
        q.set_feature("dom0", "preload-dispvm-delay", "3600")
        q.set_feature(DVM, "preload-dispvm-max", "1")
        (preload,) = q.wait_until(lambda: [p for p in q.preloads()
                                           if q.qubes()[p]["state"] == "Paused"], "a preload")
        proxy = HoldingProxy(q.socket_path, tmp_path / "holding.sock")
        try:
            env = broker.env(SERVICE_OPEN, "tor", "anon-whonix")
            env["WHONIX_OPEN_QUBESD_SOCKET"] = proxy.path
            proc = broker.start(env=env)
            proc.stdin.write(header("a.txt") + b"x")
            proc.stdin.close()
            assert proxy.created.wait(DEADLINE), "CreateDisposable was not called"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=DEADLINE)
            proc.stdout.close()
            proc.stderr.close()
        finally:
            proxy.close()
        wait_for(lambda: q.qubes()[preload]["state"] == "Running" or None, "the handed-out one")
        assert q.prop(preload, "netvm") == "sys-whonix"  # the DVM's: the profile's network
        assert broker.open_file().code == 0  # the next request sweeps, but cannot prove it
        assert preload in q.qubes()
        reap = _admin(broker, "reap", "--json")
        assert reap.returncode == 0, reap.stderr
        [action] = [a for a in json.loads(reap.stdout)["actions"] if a["qube"] == preload]
        assert action["result"].startswith("skipped: cannot prove it is this service's: an "
                                           f"admin.vm.CreateDisposable of {DVM} was under way")
        assert preload in q.qubes()
        check = json.loads(_admin(broker, "check", "--json").stdout)
        [warn] = [f for f in check["findings"] if f["check"] == "unproven"]
        assert warn["qubes"] == [preload] and warn["fix"] == [f"qvm-kill {preload}"]
        q.expect_ok("admin.vm.Kill", preload)  # the administrator's qvm-kill
        wait_for(lambda: preload not in q.qubes() or None, "auto_cleanup")
        assert _admin(broker, "reap").stdout == "nothing to reap\n"
        assert not list(Path(broker.run_dir).glob("*.s*"))  # the record went with it
