"""Stand-in for dom0's qrexec-client next to the REAL qubesd (bin/qrexec-client
runs it). Two callers use it, as on dom0:

- the broker (WHONIX_OPEN_QREXEC_CLIENT): `-d QUBE -w SECONDS
  "DEFAULT:QUBESRPC SERVICE+ dom0"`, its stdin/stdout being the stream;
- qubesd itself (qubes.config.system_path["qrexec_client_path"]): `-d QUBE
  [-w SECONDS] "USER:QUBESRPC qubes.WaitForRunningSystem dom0"` while it
  preloads a disposable (qubes/vm/dispvm.py), answered at once.

Like the real one it reaches only a running qube (there: the qube's
qrexec-daemon exists only while it runs; here: the fake libvirt's
domains.json says the domain is active and not paused), never starts one, and
its call ends when the qube dies (the vchan closes): it polls the domain and
kills the service when the domain stops or is replaced.

The qube's side of the broker's call is the simulated disposable
(whonix_open.sim.disposable) recording into the harness's side directory
(WHONIX_OPEN_REALQUBESD_SIDE), with what the REAL qubesd says of the qube when
the call reaches it (netvm, default_dispvm: read over its socket, not through
the counting proxy) in that directory's `services` list.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

POLL = 0.05
QUBESD_WAITS = ("qubes.WaitForRunningSystem", "qubes.WaitForSession")
BASE_ENV = "WHONIX_OPEN_REALQUBESD_DIR"
SIDE_ENV = "WHONIX_OPEN_REALQUBESD_SIDE"
RUNNING = 1  # VIR_DOMAIN_RUNNING


def domain(base: Path, name: str) -> dict | None:
    try:
        return json.loads((base / "hypervisor" / "domains.json").read_text()).get(name)
    except (OSError, ValueError):
        return None


def qubesd_property(base: Path, qube: str, prop: str) -> str | None:
    """admin.vm.property.Get straight on the real qubesd's socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(base / "qubesd.sock"))
        s.sendall(f"admin.vm.property.Get+{prop} dom0 name {qube}\0".encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data.startswith(b"0\0"):
        raise RuntimeError(f"qubesd refused {prop} of {qube}: {data!r}")
    value = data[2:].decode().split(" ", 2)[2]
    return value or None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    name, timeout, command = None, 60, None
    while args:
        a = args.pop(0)
        if a == "-d":
            name = args.pop(0)
        elif a == "-w":
            timeout = int(args.pop(0))
        elif a in ("-t", "-T"):
            continue
        else:
            command = a
    if name is None or command is None or ":QUBESRPC " not in command:
        print(f"qrexec-client: unsupported call {argv!r}", file=sys.stderr)
        return 2
    _user, _, rest = command.partition(":QUBESRPC ")
    words = rest.split(" ")
    if len(words) != 2:
        print(f"qrexec-client: unsupported command {command!r}", file=sys.stderr)
        return 2
    service, _source = words[0].rstrip("+"), words[1]
    base = Path(os.environ[BASE_ENV])
    dom = domain(base, name)
    if dom is None or dom["id"] < 0 or dom["state"] != RUNNING:
        print(f"qrexec-client: {name} is not running", file=sys.stderr)
        return 1
    if service in QUBESD_WAITS:
        return 0  # the qube's system is up as soon as it runs here
    return relay(base, Path(os.environ[SIDE_ENV]), name, service, timeout, dom["id"])


def relay(base: Path, side: Path, name: str, service: str, timeout: int, xid: int) -> int:
    from whonix_open.sim.state import SimState

    state = SimState(side)
    entry = {"qube": name, "service": service, "connect_timeout": timeout,
             "t": time.monotonic(), "netvm": qubesd_property(base, name, "netvm"),
             "default_dispvm": qubesd_property(base, name, "default_dispvm")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "whonix_open.sim.disposable", "--sim-dir", str(side),
         "--qube", name, "--caller", "dom0", "--service", service],
        stdin=0, stdout=1, stderr=subprocess.DEVNULL)
    with state.transaction() as st:
        st["services"].append({**entry, "pid": proc.pid})
        st["processes"].setdefault(name, []).append([proc.pid, 0])
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    os.close(0)
    os.close(1)
    while proc.poll() is None:
        dom = domain(base, name)
        if dom is None or dom["id"] != xid:  # the qube died: so does the call
            proc.kill()
            proc.wait()
            return 1
        time.sleep(POLL)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
