"""whonix.ConvertInDisposable+RESOLUTION+PROFILE: the real service executable,
real pipes, the simulated Qubes, and in the disposable the unmodified upstream
qubes.PdfConvert server (qubespdfconverter.server) on a real PDF. Offline
profiles only (78); the same broker path as files, links and apps."""

from __future__ import annotations

import re

import pytest

from tests.convert_docs import make_pdf
from tests.dom0.test_open_service import audit_line, methods
from whonix_open.contract import SERVICE_CONVERT, Exit


def _convert(broker, data: bytes, arg: str = "300+offline", **kw):
    return broker.run(data, service=SERVICE_CONVERT, arg=arg, **kw)


def test_the_real_server_answers_through_dom0_untouched(broker, sim, tmp_path):
    pdf = make_pdf(tmp_path / "in.pdf", pages=2)
    r = _convert(broker, pdf.read_bytes(), arg="75+offline")
    assert r.code == Exit.OK, r.err
    # The stock protocol: "2\n", then per page "W H\n" + W*H*3 bytes. A page of
    # 144x72 pt at 75 ppi is 150x75 pixels.
    assert r.out.startswith(b"2\n150 75\n")
    assert len(r.out) == len(b"2\n") + 2 * (len(b"150 75\n") + 150 * 75 * 3)
    line = audit_line(r.err)
    assert "service=whonix.ConvertInDisposable profile=offline relay=qubes.PdfConvert+75" in line
    assert "network=offline" in line and "exit=0" in line
    assert sim.disposables() == []
    (svc,) = [s for s in sim.services() if s["service"].startswith("qubes.PdfConvert")]
    assert svc["service"] == "qubes.PdfConvert+75" and svc["netvm"] in (None, "")


@pytest.mark.parametrize("arg", ["300+tor", "75+tor"])
def test_a_profile_with_a_network_is_78_before_any_admin_call(broker, sim, arg):
    r = _convert(broker, b"%PDF-1.4\n", arg=arg)
    assert r.code == Exit.CONVERT_NEEDS_OFFLINE
    assert "which has a network" in r.err
    assert sim.calls() == []


def test_a_custom_network_profile_is_78_and_a_custom_offline_one_converts(broker, sim,
                                                                         tmp_path):
    broker.config.write_text('[profiles.tor2]\nnetwork = "tor"\n'
                             '[profiles.airgap]\nnetwork = "offline"\n')
    assert _convert(broker, b"x", arg="300+tor2").code == Exit.CONVERT_NEEDS_OFFLINE
    assert sim.calls() == []
    pdf = make_pdf(tmp_path / "in.pdf", pages=1)
    r = _convert(broker, pdf.read_bytes(), arg="75+airgap")
    assert r.code == Exit.OK, r.err
    assert r.out.startswith(b"1\n150 75\n")


@pytest.mark.parametrize("arg", [
    "offline", "300", "+offline", "300+", "0300+offline", "74+offline", "4801+offline",
    "300+offline+x", "-300+offline", "300+Offline", "1e3+offline", "\uff13\uff10\uff10+offline",
    "300 +offline", "300+nosuchprofile",
])
def test_anything_but_resolution_plus_profile_is_64_before_any_admin_call(broker, sim, arg):
    r = _convert(broker, b"%PDF-1.4\n", arg=arg)
    assert r.code == Exit.BAD_REQUEST, (arg, r.err)
    assert sim.calls() == []


@pytest.mark.parametrize("arg", ["75+offline", "4800+offline", "300+offline"])
def test_the_stock_clients_resolution_range_is_accepted(broker, sim, arg):
    sim.set_fault("converter", "short")  # the answer does not matter here
    r = _convert(broker, b"x", arg=arg)
    assert r.code == Exit.OK, r.err
    res = arg.split("+")[0]
    assert f"relay=qubes.PdfConvert+{res}" in audit_line(r.err)


def test_a_failing_converter_is_69_and_the_disposable_is_gone(broker, sim):
    # Not a PDF: the real server says "Unsupported file type" and exits 1.
    r = _convert(broker, b"plain text, not a document\n")
    assert r.code == Exit.DISPOSABLE_FAILED
    assert re.search(r"qubes\.PdfConvert\+300 in \S+ failed with exit code 1", r.err)
    assert r.out == b""
    assert sim.disposables() == []


def test_a_conversion_costs_the_admin_calls_of_an_offline_file_open(broker, sim, tmp_path):
    assert broker.open_file(arg="offline").code == Exit.OK
    file_calls = methods(sim)
    pdf = make_pdf(tmp_path / "in.pdf", pages=1)
    assert _convert(broker, pdf.read_bytes(), arg="75+offline").code == Exit.OK
    convert_calls = methods(sim)[len(file_calls):]
    assert sorted(convert_calls) == sorted(file_calls), (file_calls, convert_calls)


def test_dom0_never_logs_the_document(broker, sim, tmp_path):
    pdf = make_pdf(tmp_path / "in.pdf", pages=1)
    r = _convert(broker, pdf.read_bytes(), arg="75+offline")
    assert r.code == Exit.OK
    assert "PDF-" not in r.err and "150 75" not in r.err
