"""The disposable side of qubes.OpenInVM, driven through real pipes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from sim_helpers import header, open_in, running_disposable

from whonix_open.sim.backend import SimBackend
from whonix_open.sim.disposable import EDIT_SUFFIX, BadHeader, parse_header
from whonix_open.sim.harness import SimQubes

DATA = b"hello\x00world\n" * 100


@pytest.fixture
def disp(backend: SimBackend) -> str:
    return running_disposable(backend)


def stored(sim: SimQubes) -> Path:
    (entry,) = sim.received()
    return Path(entry["path"])


def test_edit_sends_the_whole_changed_file_back(sim: SimQubes, backend: SimBackend,
                                                disp: str) -> None:
    proc, stream = open_in(backend, disp, header(b"report.odt") + DATA)
    assert proc.wait(timeout=10) == 0
    assert stream.finish() == DATA + EDIT_SUFFIX
    (entry,) = sim.received()
    assert entry["qube"] == disp and entry["caller"] == "dom0"
    assert (entry["name"], entry["view_only"], entry["size"]) == ("report.odt", False, len(DATA))
    assert entry["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert entry["replied"] == len(DATA) + len(EDIT_SUFFIX)
    path = stored(sim)
    assert path.parent.parent == sim.dir / "disposables" / disp
    assert path.parent.name.startswith("dom0-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_noop_sends_nothing_back(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("disposable_behaviour", "noop")
    proc, stream = open_in(backend, disp, header(b"a.txt") + DATA)
    assert proc.wait(timeout=10) == 0
    assert stream.finish() == b""
    assert sim.received()[0]["replied"] is None
    assert stored(sim).read_bytes() == DATA


def test_view_only_prefix_is_honoured_and_the_reply_still_sent(
        sim: SimQubes, backend: SimBackend, disp: str) -> None:
    proc, stream = open_in(backend, disp, header(b"a.pdf", view_only=True) + DATA)
    assert proc.wait(timeout=10) == 0
    # The real vm-file-editor sends a changed file back even when view-only;
    # dropping it is dom0's job.
    assert stream.finish() == DATA + EDIT_SUFFIX
    entry = sim.received()[0]
    assert (entry["name"], entry["view_only"]) == ("a.pdf", True)
    assert stat.S_IMODE(stored(sim).stat().st_mode) == 0o400


def test_empty_file(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("disposable_behaviour", "noop")
    proc, stream = open_in(backend, disp, header(b"empty"))
    assert proc.wait(timeout=10) == 0
    assert stream.finish() == b""
    assert sim.received()[0]["size"] == 0


def test_name_is_sanitised(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    proc, stream = open_in(backend, disp, header(b"a b$c\xff;(1)+x@y-z.txt") + DATA)
    assert proc.wait(timeout=10) == 0
    stream.finish()
    assert sim.received()[0]["name"] == "a_b_c___1_+x@y-z.txt"
    assert stored(sim).name == "a_b_c___1_+x@y-z.txt"


def test_long_name_uses_all_255_bytes(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    # No NUL at all: byte 255 is forced to NUL, so the name is the first 255 bytes.
    raw = b"n" * 251 + b".txtX"
    assert len(raw) == 256
    proc, stream = open_in(backend, disp, raw + DATA)
    assert proc.wait(timeout=10) == 0
    stream.finish()
    assert sim.received()[0]["name"] == "n" * 251 + ".txt"
    assert sim.received()[0]["size"] == len(DATA)


@pytest.mark.parametrize("raw", [b"../etc/passwd", b"a/b", b"view-only-x/y"])
def test_slash_aborts(sim: SimQubes, backend: SimBackend, disp: str, raw: bytes) -> None:
    proc, stream = open_in(backend, disp, header(raw) + DATA)
    assert proc.wait(timeout=10) == 1
    assert stream.finish() == b""
    assert sim.received() == []


@pytest.mark.parametrize("data", [b"", b"short.txt\0", b"x" * 255])
def test_short_header_exits_1(sim: SimQubes, backend: SimBackend, disp: str,
                              data: bytes) -> None:
    proc, stream = open_in(backend, disp, data)
    assert proc.wait(timeout=10) == 1
    assert stream.finish() == b""
    assert sim.received() == []


def test_partial_reply(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("disposable_behaviour", "partial_reply")
    proc, stream = open_in(backend, disp, header(b"a.txt") + DATA)
    assert proc.wait(timeout=10) == 1
    edited = DATA + EDIT_SUFFIX
    assert stream.finish() == edited[:len(edited) // 2]


def test_fail(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("disposable_behaviour", "fail")
    proc, stream = open_in(backend, disp, header(b"a.txt") + DATA)
    assert proc.wait(timeout=10) == 1
    assert stream.finish() == b""
    assert len(sim.received()) == 1


def test_hang_until_killed(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("disposable_behaviour", "hang")
    proc, stream = open_in(backend, disp, header(b"a.txt") + DATA)
    sim.wait_until(lambda s: s.received())
    assert proc.poll() is None
    proc.terminate()  # what dom0's qrexec-client would get
    assert proc.wait(timeout=10) < 0
    assert stream.finish() == b""


def test_cat_echoes_the_raw_stream(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("disposable_behaviour", "cat")
    payload = os.urandom(3 << 20)
    proc, stream = open_in(backend, disp, payload)
    assert proc.wait(timeout=30) == 0
    assert stream.finish(timeout=30) == payload
    assert sim.received() == []  # no header parsing in this mode


def test_netvm_change_mid_session(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("netvm_change_to", "sys-firewall")
    proc, stream = open_in(backend, disp, header(b"a.txt") + DATA)
    sim.wait_until(lambda s: s.qube(disp)["netvm"] == "sys-firewall")
    assert proc.poll() is None  # then hangs until the broker kills it
    assert sim.calls()[-1] == {"method": "admin.vm.property.Set", "dest": disp,
                               "arg": "netvm", "pid": proc.pid, "payload": "sys-firewall"}
    backend.kill(disp)
    assert proc.wait(timeout=10) == -9
    stream.finish()


def test_netvm_change_to_none(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    sim.set_fault("netvm_change_to", "")
    proc, stream = open_in(backend, disp, header(b"a.txt") + DATA)
    sim.wait_until(lambda s: s.qube(disp)["netvm_set_count"] == 1)
    assert sim.qube(disp)["netvm"] is None
    backend.kill(disp)
    proc.wait(timeout=10)
    stream.finish()


def test_unknown_service_is_127(backend: SimBackend, disp: str) -> None:
    proc, stream = open_in(backend, disp, b"", service="qubes.Nope")
    assert proc.wait(timeout=10) == 127
    stream.finish()


def test_reader_gone_mid_reply(sim: SimQubes, backend: SimBackend, disp: str) -> None:
    """A caller that stops reading must not make the disposable side hang."""
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    os.close(r_out)  # nobody will ever read the reply
    proc = backend.run_service(disp, "qubes.OpenInVM", stdin=r_in, stdout=w_out,
                               connect_timeout=5)
    os.close(r_in)
    os.close(w_out)
    os.write(w_in, header(b"a.txt") + b"x" * 1000)
    os.close(w_in)
    assert proc.wait(timeout=10) == 1


def test_parse_header_unit() -> None:
    assert parse_header(header(b"view-only-view-only-x")) == ("view-only-x", True)
    assert parse_header(header(b"a\x00hidden")) == ("a", False)
    for bad in (header(b""), header(b"."), header(b".."), header(b"view-only-"), b"x" * 10):
        with pytest.raises(BadHeader):
            parse_header(bad)
