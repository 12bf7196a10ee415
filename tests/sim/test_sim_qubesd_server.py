"""The qubesd stand-in's wire protocol, byte for byte (qubes/api/__init__.py:
`0\\0` + data, `2\\0` + class, traceback, message; admin.Events frames), and the
Admin API semantics of the model it serves (qubes/api/admin.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from whonix_open.sim.harness import SimQubes
from whonix_open.sim.qubesd_server import QubesdServer

DVM = "whonix-workstation-18-dvm"


@pytest.fixture
def server(sim: SimQubes, tmp_path: Path):
    s = QubesdServer(sim.dir, tmp_path / "qubesd.sock").start()
    yield s
    s.stop()


def call(server: QubesdServer, method: str, dest: str, arg: str = "",
         payload: bytes = b"") -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(server.socket_path)
        s.sendall(f"{method}+{arg} dom0 name {dest}\0".encode() + payload)
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_list_on_dom0_lists_every_qube_and_on_a_qube_only_it(server, sim):
    everything = call(server, "admin.vm.List", "dom0")
    assert everything.startswith(b"0\0")
    names = [line.split(b" ")[0].decode() for line in everything[2:].splitlines()]
    assert names == ["dom0", *sorted(n for n in sim.qubes() if n != "dom0")]  # dom0 first
    one = call(server, "admin.vm.List", "sys-whonix")[2:].decode()
    assert one.startswith("sys-whonix class=AppVM state=Running uuid=") and one.count("\n") == 1


def test_errors_are_exception_frames(server):
    assert call(server, "admin.vm.List", "ghost") == \
        b"2\0QubesVMNotFoundError\0\0No such domain: 'ghost'\0"
    reply = call(server, "admin.vm.feature.Get", DVM, "nothing")
    assert reply.startswith(b"2\0QubesFeatureNotFoundError\0\0")
    assert call(server, "admin.vm.Kill", DVM).startswith(b"2\0QubesVMNotStartedError\0")


def test_properties_with_defaults_through_the_template(server):
    name = call(server, "admin.vm.CreateDisposable", DVM)[2:].decode()
    assert call(server, "admin.vm.property.Get", name, "default_dispvm") == \
        f"0\0default=True type=vm {DVM}".encode()
    assert call(server, "admin.vm.property.Set", name, "default_dispvm", b"") == b"0\0"
    assert call(server, "admin.vm.property.Get", name, "default_dispvm") == \
        b"0\0default=False type=vm "
    tags = call(server, "admin.vm.tag.List", name)[2:].decode().split()
    assert {"created-by-dom0", "disp-created-by-dom0"} <= set(tags)
    assert call(server, "admin.vm.CreateDisposable", DVM, "", b"uuid")[2:].startswith(b"uuid:")


def test_events_start_with_connection_established_then_netvm_changes(server, sim):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(server.socket_path)
        s.sendall(b"admin.Events+ dom0 name sys-whonix\0")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        got = b""
        while b"connection-established" not in got:
            got += s.recv(4096)
        assert got == b"1\0\0connection-established\0\0"
        call(server, "admin.vm.property.Set", "sys-whonix", "netvm", b"sys-net")
        call(server, "admin.vm.property.Set", "personal", "netvm", b"")  # not this qube
        got = b""
        while not got.endswith(b"\0\0"):
            got += s.recv(4096)
    assert got == (b"1\0sys-whonix\0property-set:netvm\0name\0netvm\0newvalue\0sys-net\0"
                   b"oldvalue\0sys-firewall\0\0")
    assert server.calls[0] == ("admin.Events", "sys-whonix", "")
