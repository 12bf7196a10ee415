"""whonix.OpenInDisposable / ViewInDisposable through the REAL qubesd."""

from __future__ import annotations

import re

from tests.dom0.test_open_service import audit_line
from whonix_open.contract import Exit


def test_open_tor_edits_come_back_and_disposable_is_gone(broker, real_qubesd):
    content = b"%PDF-1.7 the original\n"
    r = broker.open_file("report.pdf", content)
    assert r.code == Exit.OK, r.err + real_qubesd.log()[-3000:]
    assert r.out.startswith(content) and len(r.out) > len(content)
    (service,) = real_qubesd.services()
    # what the real qubesd said of the disposable when the stream reached it
    assert (service["netvm"], service["default_dispvm"]) == ("sys-whonix", None)
    assert real_qubesd.disposables() == []  # killed, and auto_cleanup removed it
    (got,) = real_qubesd.received()
    assert got["name"] == "report.pdf" and got["size"] == len(content)
    line = audit_line(r.err)
    assert "network=sys-whonix" in line and re.search(r"disposable=disp\d+ ", line)
