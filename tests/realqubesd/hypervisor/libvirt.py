"""A fake `libvirt` for the real qubesd: the hypervisor below it, nothing else.

qubesd (QubesOS/qubes-core-admin) reaches the hypervisor only through
libvirt: qubes/app.py VMMConnection -> `libvirt.open(uri)`, and per qube
qubes/vm/qubesvm.py (`defineXML`, `lookupByUUID`, `createWithFlags(
VIR_DOMAIN_START_PAUSED)`, `resume`, `suspend`, `destroy`, `state`,
`isActive`, `ID`, `info`, `maxMemory`, `memoryStats`, `attachDevice`, ...),
and hears of a stopped domain through `domainEventRegisterAny` (app.py
`_domain_event_callback`). This module is first on the qubesd process's
sys.path (see tests/realqubesd/harness.py); qubesd itself is unmodified.

What a domain does here: it exists once defined, gets an id when created,
runs paused until resumed, and stops on destroy() (or on a `shutdown NAME`
line from our `virsh` stand-in on the control socket). Every state change is
written to `domains.json` in the state directory (the URI's path), which is
what dom0's qrexec-client stand-in reads to reach only a running qube, as the
real one reaches only a running qube's qrexec-daemon.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import socket
import uuid as uuidlib

# Constants qubesd uses (values as in libvirt's headers).
VIR_DOMAIN_NOSTATE, VIR_DOMAIN_RUNNING, VIR_DOMAIN_BLOCKED = 0, 1, 2
VIR_DOMAIN_PAUSED, VIR_DOMAIN_SHUTDOWN, VIR_DOMAIN_SHUTOFF = 3, 4, 5
VIR_DOMAIN_CRASHED, VIR_DOMAIN_PMSUSPENDED = 6, 7
VIR_DOMAIN_START_PAUSED = 1
VIR_DOMAIN_EVENT_ID_LIFECYCLE = 0
(VIR_DOMAIN_EVENT_DEFINED, VIR_DOMAIN_EVENT_UNDEFINED, VIR_DOMAIN_EVENT_STARTED,
 VIR_DOMAIN_EVENT_SUSPENDED, VIR_DOMAIN_EVENT_RESUMED, VIR_DOMAIN_EVENT_STOPPED) = range(6)
VIR_ERR_INTERNAL_ERROR = 1
VIR_ERR_NO_SUPPORT = 3
VIR_ERR_INVALID_CONN = 19
VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_OS_TYPE = 12
VIR_ERR_OPERATION_UNSUPPORTED = 84
VIR_ERR_NO_NODE_DEVICE = 65
VIR_NODE_SUSPEND_TARGET_MEM = 0
VIR_NODE_CPU_STATS_ALL_CPUS = -1
VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE = 1

MEMORY_KIB = 400 * 1024


class libvirtError(Exception):
    def __init__(self, msg: str, code: int = VIR_ERR_INTERNAL_ERROR) -> None:
        super().__init__(msg)
        self._code = code

    def get_error_code(self) -> int:
        return self._code

    def get_str2(self) -> str | None:
        return None


_handler = None


def registerErrorHandler(f, ctx) -> None:
    global _handler
    _handler = (f, ctx)


class virDomain:
    def __init__(self, conn: virConnect, name: str, uuid: uuidlib.UUID) -> None:
        self._conn, self._name, self._uuid = conn, name, uuid
        self.state_code = VIR_DOMAIN_SHUTOFF
        self.id = -1
        self.defined = True

    # identity
    def name(self) -> str:
        return self._name

    def UUID(self) -> bytes:
        return self._uuid.bytes

    def UUIDString(self) -> str:
        return str(self._uuid)

    def ID(self) -> int:
        return self.id

    def connect(self) -> virConnect:
        return self._conn

    def XMLDesc(self, flags: int = 0) -> str:
        return self._conn.xml.get(
            self._name, f"<domain><name>{self._name}</name><devices/></domain>")

    # state
    def isActive(self) -> int:
        return int(self.id >= 0)

    def state(self, flags: int = 0) -> list[int]:
        return [self.state_code, 0]

    def info(self) -> list[int]:
        active = self.id >= 0
        return [self.state_code, MEMORY_KIB, MEMORY_KIB if active else 0, 2,
                10**9 if active else 0]

    def maxMemory(self) -> int:
        return MEMORY_KIB

    def memoryStats(self) -> dict[str, int]:
        return {"actual": MEMORY_KIB if self.id >= 0 else 0}

    def _require_active(self) -> None:
        if self.id < 0:
            raise libvirtError(f"Requested operation is not valid: domain is not running"
                               f" ({self._name})", VIR_ERR_OPERATION_INVALID)

    # lifecycle
    def createWithFlags(self, flags: int = 0) -> int:
        if self.id >= 0:
            raise libvirtError("domain is already running", VIR_ERR_OPERATION_INVALID)
        self.id = self._conn.next_id()
        self.state_code = VIR_DOMAIN_PAUSED if flags & VIR_DOMAIN_START_PAUSED \
            else VIR_DOMAIN_RUNNING
        self._conn.changed(self, VIR_DOMAIN_EVENT_STARTED)
        return 0

    def create(self) -> int:
        return self.createWithFlags(0)

    def resume(self) -> int:
        self._require_active()
        self.state_code = VIR_DOMAIN_RUNNING
        self._conn.changed(self, VIR_DOMAIN_EVENT_RESUMED)
        return 0

    def suspend(self) -> int:
        self._require_active()
        self.state_code = VIR_DOMAIN_PAUSED
        self._conn.changed(self, VIR_DOMAIN_EVENT_SUSPENDED)
        return 0

    def pMSuspendForDuration(self, target: int, duration: int, flags: int) -> int:
        raise libvirtError("not supported", VIR_ERR_OPERATION_UNSUPPORTED)

    def pMWakeup(self, flags: int = 0) -> int:
        return self.resume()

    def destroy(self) -> int:
        self._require_active()
        with contextlib.suppress(FileNotFoundError):  # the qrexec-daemon ends with it
            os.unlink(f"/run/qubes/qrexec.{self._name}")
        self.id = -1
        self.state_code = VIR_DOMAIN_SHUTOFF
        self._conn.changed(self, VIR_DOMAIN_EVENT_STOPPED)
        return 0

    def shutdown(self) -> int:
        return self.destroy()

    def undefine(self) -> int:
        self.defined = False
        self._conn.forget(self)
        return 0

    def attachDevice(self, xml: str) -> int:
        self._require_active()
        return 0

    def detachDevice(self, xml: str) -> int:
        self._require_active()
        return 0


class virConnect:
    """One hypervisor; its state dir is the path of the URI (`fake:///DIR`)."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self.state_dir = uri.split("://", 1)[1] or "."
        self.domains: dict[str, virDomain] = {}
        self.xml: dict[str, str] = {}
        self._callbacks: dict[int, tuple] = {}
        self._ids = 0
        self._alive = True
        from libvirtaio import LOOP  # the loop qubesd registered (libvirtaio.py here)

        self._loop = LOOP
        self._control: socket.socket | None = None
        dom0 = self.domains["Domain-0"] = virDomain(self, "Domain-0", uuidlib.UUID(int=0))
        dom0.id, dom0.state_code = 0, VIR_DOMAIN_RUNNING  # dom0 always runs, id 0
        if self._loop is not None:
            self._listen()
        self._write()

    # virsh's requests (shutdown NAME) on a datagram socket, read in qubesd's loop
    def _listen(self) -> None:
        path = os.path.join(self.state_dir, "control.sock")
        if os.path.exists(path):
            os.unlink(path)
        self._control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._control.bind(path)
        self._control.setblocking(False)
        self._loop.add_reader(self._control.fileno(), self._on_control)

    def _on_control(self) -> None:
        try:
            data = self._control.recv(4096).decode()
        except BlockingIOError:
            return
        verb, _, name = data.strip().partition(" ")
        dom = self.domains.get(name)
        if verb == "shutdown" and dom is not None and dom.id >= 0:
            dom.destroy()

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def changed(self, dom: virDomain, event: int) -> None:
        self._write()
        for cb, opaque in list(self._callbacks.values()):
            if self._loop is not None:
                self._loop.call_soon(cb, self, dom, event, 0, opaque)

    def forget(self, dom: virDomain) -> None:
        self.domains.pop(dom.name(), None)
        self.xml.pop(dom.name(), None)
        self._write()

    def _write(self) -> None:
        data = {n: {"uuid": d.UUIDString(), "id": d.id, "state": d.state_code}
                for n, d in self.domains.items()}
        path = os.path.join(self.state_dir, "domains.json")
        with builtins.open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    # connection
    def getType(self) -> str:
        return "Fake"  # not "Xen": qubesd then uses no xenstore, no xl

    def getURI(self) -> str:
        return self._uri

    def getHostname(self) -> str:
        return "dom0"

    def isAlive(self) -> int:
        return int(self._alive)

    def close(self) -> int:
        return 0

    def getInfo(self) -> list:
        return ["x86_64", 24 * 1024, 2, 2000, 1, 1, 2, 1]

    def getCPUStats(self, cpu: int, flags: int = 0) -> dict:
        return {"kernel": 0, "user": 0, "idle": 0, "iowait": 0}

    def defineXML(self, xml: str) -> virDomain:
        name = re.search(r"<name>([^<]+)</name>", xml)
        uuid = re.search(r"<uuid>([^<]+)</uuid>", xml)
        if not name or not uuid:
            raise libvirtError("XML has no name or uuid")
        dom = self.domains.get(name[1])
        if dom is None:
            dom = self.domains[name[1]] = virDomain(self, name[1], uuidlib.UUID(uuid[1]))
        self.xml[name[1]] = xml
        self._write()
        return dom

    def lookupByUUID(self, uuid: bytes) -> virDomain:
        for dom in self.domains.values():
            if dom.UUID() == uuid:
                return dom
        raise libvirtError("Domain not found", VIR_ERR_NO_DOMAIN)

    def lookupByName(self, name: str) -> virDomain:
        if name in self.domains:
            return self.domains[name]
        raise libvirtError("Domain not found", VIR_ERR_NO_DOMAIN)

    def lookupByID(self, id_: int) -> virDomain:
        for dom in self.domains.values():
            if dom.id == id_ >= 0:
                return dom
        raise libvirtError("Domain not found", VIR_ERR_NO_DOMAIN)

    def listAllDomains(self, flags: int = 0) -> list[virDomain]:
        return list(self.domains.values())

    def getAllDomainStats(self, stats: int = 0, flags: int = 0) -> list:
        return [(d, {"balloon.current": MEMORY_KIB}) for d in self.domains.values()
                if d.id >= 0]

    def nodeDeviceLookupByName(self, name: str):
        raise libvirtError("no node device", VIR_ERR_NO_NODE_DEVICE)

    def listAllDevices(self, flags: int = 0) -> list:
        return []

    def domainEventRegisterAny(self, dom, event_id: int, cb, opaque) -> int:
        key = len(self._callbacks) + 1
        if event_id == VIR_DOMAIN_EVENT_ID_LIFECYCLE:
            self._callbacks[key] = (cb, opaque)
        return key

    def domainEventDeregisterAny(self, key: int) -> int:
        self._callbacks.pop(key, None)
        return 0


def open(uri: str | None = None) -> virConnect:
    return virConnect(uri or "fake:///.")


def openReadOnly(uri: str | None = None) -> virConnect:
    return open(uri)
