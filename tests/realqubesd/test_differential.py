"""Differential test: the same Admin API call sequences (those the broker and
whonix-open-admin make, and their error cases) go to our qubesd model
(sim/qubesd_server.py, what `make demo` and the fast tier run on) and to the
REAL qubesd of this release, both built from the same qube list
(qubesd_main.QUBES); any difference in a reply or in the events the broker
listens to fails, so the model cannot drift from the real thing unseen.

Normalised, and only these (each is random or outside what the model models):
- disposable names `dispN` and `dispid`s: qubesd draws N at random
  (qubes/vm/dispvm.py gen_disposable, app.get_new_unused_dispid) -> DISP1..;
- uuids: random per qube (uuid4) -> UUID1..;
- `xid` values of running qubes: the hypervisor's domain id -> XID (-1, "not
  running", is compared as is);
- admin.vm.property.GetAll: only the properties the model has are compared
  (it models what the broker and the admin tool read; qubesd has ~60 more,
  memory, kernel, mac, ...), and the model must not have any qubesd lacks;
- CurrentState: mem/mem_static_max/cputime are the hypervisor's figures; the
  power_state is compared;
- admin.Events: only the events the broker subscribes to (property-set/
  reset/del of netvm, connection-established) are compared; qubesd fires many
  more (domain-pre-start, property-reset:xid, ...) that nobody here reads.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.realqubesd.harness import DVM, RealQubesd, raw_call, release
from tests.realqubesd.qubesd_main import LATE_PROPERTIES, QUBES, RUNNING
from whonix_open.sim.harness import SimQubes
from whonix_open.sim.qubesd_server import QubesdServer

Step = tuple[str, str, str, bytes]  # method, dest ("$1" = the n-th new disposable), arg, payload


def scenario() -> dict[str, Any]:
    """The model's scenario from the very qube list the real qubes.xml is made of."""
    qubes: dict[str, Any] = {"dom0": {"klass": "AdminVM", "power_state": "Running"}}
    for name, klass, props, features, tags in QUBES:
        q: dict[str, Any] = {"klass": klass, "features": dict(features), "tags": list(tags)}
        for key in ("template", "netvm", "default_dispvm", "template_for_dispvms",
                    "provides_network"):
            if key in props:
                q[key] = "" if props[key] is None else props[key]
        q["power_state"] = "Running" if name in RUNNING else "Halted"
        qubes[name] = q
    for name, key, value in LATE_PROPERTIES:
        qubes[name][key] = value
    # qubesd_main.create sets these globals on the real app; the model answers
    # like this venv's release (R4.2's replies differ in details)
    return {"qubes": qubes, "release": ".".join(release().split(".")[:2]),
            "globals": {"default_netvm": "sys-firewall", "default_dispvm": "default-dvm"}}


SEQUENCES: dict[str, list[Step]] = {
    "list": [
        ("admin.vm.List", "dom0", "", b""),
        ("admin.vm.List", "sys-whonix", "", b""),
        ("admin.vm.List", "ghost", "", b""),
    ],
    "broker reads": [
        ("admin.vm.property.GetAll", "anon-whonix", "", b""),
        ("admin.vm.property.GetAll", DVM, "", b""),
        ("admin.vm.property.GetAll", "whonix-workstation-18", "", b""),
        ("admin.vm.property.GetAll", "dom0", "", b""),
        ("admin.vm.feature.CheckWithTemplate", DVM, "whonix-ws", b""),
        ("admin.vm.feature.CheckWithTemplate", "sys-whonix", "whonix-gw", b""),
        ("admin.vm.feature.CheckWithTemplate", "sys-firewall", "whonix-gw", b""),
        ("admin.vm.feature.Get", "whonix-workstation-18", "whonix-ws", b""),
        ("admin.vm.feature.Get", DVM, "whonix-ws", b""),
        ("admin.vm.tag.List", "sys-whonix", "", b""),
        ("admin.vm.tag.Get", "sys-whonix", "anon-gateway", b""),
        ("admin.vm.tag.Get", "sys-whonix", "anon-vm", b""),
        ("admin.vm.CurrentState", "sys-whonix", "", b""),
        ("admin.vm.CurrentState", DVM, "", b""),
    ],
    "properties": [
        ("admin.vm.property.Get", "anon-whonix", prop, b"")
        for prop in ("netvm", "default_dispvm", "template", "klass", "xid", "label",
                     "qrexec_timeout", "management_dispvm", "provides_network", "guivm")
    ] + [
        ("admin.vm.property.Get", DVM, "template_for_dispvms", b""),
        ("admin.vm.property.Get", "sys-net", "netvm", b""),
        ("admin.vm.property.Get", "vault", "netvm", b""),
        ("admin.vm.property.Get", "whonix-workstation-18", "template", b""),
        ("admin.vm.property.Get", "anon-whonix", "auto_cleanup", b""),
        ("admin.vm.property.Get", "anon-whonix", "no_such_property", b""),
        ("admin.vm.property.Get", "ghost", "netvm", b""),
    ],
    "open tor (CreateDisposable)": [
        ("admin.vm.CreateDisposable", DVM, "", b""),
        ("admin.vm.tag.Set", "$1", "whonix-open-contained", b""),
        ("admin.vm.feature.Set", "$1", "whonix-open-session", b"s1"),
        ("admin.vm.property.Set", "$1", "default_dispvm", b""),
        ("admin.vm.property.GetAll", "$1", "", b""),
        ("admin.vm.property.Get", "$1", "auto_cleanup", b""),
        ("admin.vm.property.Get", "$1", "dispid", b""),
        ("admin.vm.tag.List", "$1", "", b""),
        ("admin.vm.feature.Get", "$1", "whonix-open-session", b""),
        ("admin.vm.feature.CheckWithTemplate", "$1", "whonix-ws", b""),
        ("admin.vm.Start", "$1", "", b""),
        ("admin.vm.CurrentState", "$1", "", b""),
        ("admin.vm.property.Get", "$1", "netvm", b""),
        ("admin.vm.Kill", "$1", "", b""),
        ("admin.vm.List", "$1", "", b""),
        ("admin.vm.CurrentState", "$1", "", b""),
    ],
    "open offline (Create.DispVM)": [
        ("admin.vm.Create.DispVM", "dom0", DVM, b"name=disp4242 label=red"),
        ("admin.vm.tag.Set", "disp4242", "whonix-open-contained", b""),
        ("admin.vm.property.Set", "disp4242", "auto_cleanup", b"True"),
        ("admin.vm.property.Set", "disp4242", "netvm", b""),
        ("admin.vm.property.Set", "disp4242", "default_dispvm", b""),
        ("admin.vm.property.GetAll", "disp4242", "", b""),
        ("admin.vm.tag.List", "disp4242", "", b""),
        ("admin.vm.Start", "disp4242", "", b""),
        ("admin.vm.property.Get", "disp4242", "netvm", b""),
        ("admin.vm.Kill", "disp4242", "", b""),
        ("admin.vm.List", "disp4242", "", b""),
    ],
    "a named DispVM without auto_cleanup, removed": [
        ("admin.vm.Create.DispVM", "dom0", DVM, b"name=disp4243 label=red"),
        ("admin.vm.property.Get", "disp4243", "auto_cleanup", b""),
        ("admin.vm.property.Get", "disp4243", "label", b""),
        ("admin.vm.Create.DispVM", "dom0", DVM, b"name=disp4243 label=red"),
        ("admin.vm.Start", "disp4243", "", b""),
        ("admin.vm.Remove", "disp4243", "", b""),
        ("admin.vm.Kill", "disp4243", "", b""),
        ("admin.vm.CurrentState", "disp4243", "", b""),
        ("admin.vm.Remove", "disp4243", "", b""),
        ("admin.vm.List", "disp4243", "", b""),
    ],
    "errors": [
        ("admin.vm.Kill", DVM, "", b""),
        ("admin.vm.Kill", "dom0", "", b""),
        ("admin.vm.Start", "ghost", "", b""),
        ("admin.vm.Remove", "sys-whonix", "", b""),
        ("admin.vm.Remove", DVM, "", b""),
        ("admin.vm.CreateDisposable", "anon-whonix", "", b""),
        ("admin.vm.CreateDisposable", DVM, "bogus", b""),
        ("admin.vm.Create.DispVM", "dom0", DVM, b"name=sys-whonix label=red"),
        ("admin.vm.Create.DispVM", "dom0", DVM, b"label=red"),
        ("admin.vm.Create.DispVM", "dom0", "anon-whonix", b"name=disp4244 label=red"),
        ("admin.vm.property.Set", "anon-whonix", "netvm", b"vault"),
        ("admin.vm.property.Set", "anon-whonix", "netvm", b"ghost"),
        ("admin.vm.property.Set", "anon-whonix", "default_dispvm", b"sys-whonix"),
        ("admin.vm.property.Set", "anon-whonix", "no_such_property", b"x"),
        ("admin.vm.feature.Get", "anon-whonix", "no-such-feature", b""),
        ("admin.vm.feature.CheckWithTemplate", "anon-whonix", "no-such-feature", b""),
        ("admin.vm.tag.Set", "anon-whonix", "bad tag!", b""),
    ],
    "property set and reset": [
        ("admin.vm.property.Set", "anon-whonix", "netvm", b""),
        ("admin.vm.property.Get", "anon-whonix", "netvm", b""),
        ("admin.vm.property.Reset", "anon-whonix", "netvm", b""),
        ("admin.vm.property.Get", "anon-whonix", "netvm", b""),
        ("admin.vm.property.Set", "anon-whonix", "netvm", b"sys-whonix"),
        ("admin.vm.property.Set", "anon-whonix", "qrexec_timeout", b"90"),
        ("admin.vm.property.Get", "anon-whonix", "qrexec_timeout", b""),
        ("admin.vm.property.Set", "anon-whonix", "qrexec_timeout", b"ninety"),
        ("admin.vm.property.Set", DVM, "template_for_dispvms", b"maybe"),
    ],
}


class Normaliser:
    """Replaces random names and ids consistently within one sequence."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _sub(self, pattern: str, prefix: str, text: str) -> str:
        def repl(m: re.Match) -> str:
            return self.names.setdefault(m[0], f"{prefix}{len(self.names) + 1}")
        return re.sub(pattern, repl, text)

    def __call__(self, reply: bytes) -> str:
        text = reply.decode(errors="replace")
        text = self._sub(r"\bdisp(?!4242|4243|4244)\d+\b", "DISP", text)
        text = self._sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                         "UUID", text)
        return text


def _get_all(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines() if line)


def _compare(step: Step, real: str, model: str) -> list[str]:
    method, dest, arg, _ = step
    if method == "admin.vm.property.GetAll" and real.startswith("0\0") \
            and model.startswith("0\0"):
        r, m = _get_all(real[2:]), _get_all(model[2:])
        extra = sorted(set(m) - set(r))
        diffs = [f"{dest}: the model has properties qubesd lacks: {extra}"] if extra else []
        for prop in sorted(set(m) & set(r)):
            rv, mv = r[prop], m[prop]
            if prop == "xid":
                rv, mv = (re.sub(r"\d+$", "XID", v) if not v.endswith("-1") else v
                          for v in (rv, mv))
            if prop == "dispid":
                rv, mv = (re.sub(r"\d+$", "ID", v) for v in (rv, mv))
            if rv != mv:
                diffs.append(f"{dest} {prop}: qubesd {rv!r}, model {mv!r}")
        return diffs
    if method == "admin.vm.CurrentState" and real.startswith("0\0") and model.startswith("0\0"):
        real = re.sub(r".*power_state=", "power_state=", real)
        model = re.sub(r".*power_state=", "power_state=", model)
    if method == "admin.vm.property.Get" and arg in ("xid", "dispid"):
        real, model = (re.sub(r"(type=(?:int|str) )\d+$", r"\1N", v) for v in (real, model))
    return [] if real == model else [f"{method}+{arg} {dest}: qubesd {real!r}, model {model!r}"]


def run_sequence(call: Callable[[str, str, str, bytes], bytes], steps: list[Step]) -> list[str]:
    norm, made, out = Normaliser(), [], []
    for method, dest, arg, payload in steps:
        if dest.startswith("$"):
            dest = made[int(dest[1:]) - 1]
        reply = call(method, dest, arg, payload)
        if method == "admin.vm.CreateDisposable" and reply.startswith(b"0\0"):
            made.append(reply[2:].decode())
        out.append(norm(reply))
    return out


@pytest.fixture
def model(tmp_path: Path):
    sim = SimQubes.create(tmp_path / "model", scenario())
    server = QubesdServer(sim.dir, tmp_path / "model.sock").start()
    yield server
    server.stop()


def differences(real_socket: str, model_socket: str, steps: list[Step]) -> list[str]:
    """Every difference between the real qubesd's and the model's answers to *steps*."""
    real = run_sequence(lambda *a: raw_call(real_socket, *a), steps)
    modelled = run_sequence(lambda *a: raw_call(model_socket, *a), steps)
    return [d for step, r, m in zip(steps, real, modelled, strict=True)
            for d in _compare(step, r, m)]


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_model_and_real_qubesd_answer_alike(real_qubesd: RealQubesd, model, name):
    assert differences(real_qubesd.socket_path, model.socket_path, SEQUENCES[name]) == []


NETVM_EVENTS = ("property-set:netvm", "property-reset:netvm", "property-del:netvm",
                "connection-established")


def _events(socket_path: str, dest: str, steps: list[Step], call) -> list[tuple]:
    """admin.Events on *dest* while *steps* run; the broker's events, parsed."""
    frames: list[bytes] = []
    s = socket.socket(socket.AF_UNIX)
    s.connect(socket_path)
    s.sendall(f"admin.Events+ dom0 name {dest}\0".encode())
    s.shutdown(socket.SHUT_WR)
    done = threading.Event()

    def read() -> None:
        buf = b""
        s.settimeout(0.2)
        while not done.is_set():
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            buf += chunk
        frames.append(buf)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    for method, d, arg, payload in steps:
        call(method, d, arg, payload)
    time.sleep(0.5)
    done.set()
    reader.join()
    s.close()
    events = []
    data = frames[0]
    assert data.startswith(b"1\0"), data[:200]
    # frames: 1 \0 subject \0 event \0 (key \0 value \0)* \0 (qubes/api/__init__.py)
    tokens, i = data.split(b"\0"), 0
    while i + 2 < len(tokens) and tokens[i] == b"1":
        subject, event, i = tokens[i + 1].decode(), tokens[i + 2].decode(), i + 3
        kwargs = {}
        while i + 1 < len(tokens) and tokens[i]:
            kwargs[tokens[i].decode()] = tokens[i + 1].decode()
            i += 2
        i += 1
        if event in NETVM_EVENTS:
            events.append((subject, event, tuple(sorted(kwargs.items()))))
    return events


def test_the_netvm_events_the_broker_watches_are_alike(real_qubesd: RealQubesd, model):
    steps: list[Step] = [
        ("admin.vm.property.Set", "anon-whonix", "netvm", b""),
        ("admin.vm.property.Set", "anon-whonix", "netvm", b"sys-whonix"),
        ("admin.vm.property.Reset", "anon-whonix", "netvm", b""),
        ("admin.vm.property.Set", "anon-whonix", "netvm", b"sys-whonix"),
    ]
    real = _events(real_qubesd.socket_path, "anon-whonix", steps,
                   lambda *a: raw_call(real_qubesd.socket_path, *a))
    modelled = _events(model.socket_path, "anon-whonix", steps,
                       lambda *a: raw_call(model.socket_path, *a))
    assert real == modelled
    assert ("", "connection-established", ()) in real
