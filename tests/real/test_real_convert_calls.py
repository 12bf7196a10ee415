"""Admin API calls of a conversion, counted at the qubesd socket with the real
library: exactly those of an offline file open (DESIGN.md "Conversions"); the
disposable runs the unmodified upstream qubes.PdfConvert server."""

from __future__ import annotations

from tests.convert_docs import make_pdf
from tests.dom0.test_preloads import DVM
from tests.real.test_real_calls import OFFLINE, _shape
from whonix_open.contract import SERVICE_CONVERT, Exit


def test_calls_at_the_socket_are_an_offline_file_opens(broker, sim, tmp_path):
    sim.set_feature("dom0", "preload-dispvm-delay", "3600")
    sim.set_feature(DVM, "preload-dispvm-max", "0")
    sim.settle()
    pdf = make_pdf(tmp_path / "in.pdf", pages=1)
    r = broker.run(pdf.read_bytes(), service=SERVICE_CONVERT, arg="75+offline")
    assert r.code == Exit.OK, r.err
    assert r.out.startswith(b"1\n150 75\n")
    (relayed,) = sim.services()
    assert relayed["service"] == "qubes.PdfConvert+75"
    assert _shape(list(broker.qubesd.calls), "anon-whonix", relayed["qube"]) == OFFLINE


def test_a_network_profile_makes_no_call(broker, sim):
    r = broker.run(b"%PDF-1.4\n", service=SERVICE_CONVERT, arg="300+tor")
    assert r.code == Exit.CONVERT_NEEDS_OFFLINE
    assert list(broker.qubesd.calls) == []
