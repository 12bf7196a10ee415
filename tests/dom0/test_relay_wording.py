"""The dom0 log says what was relayed - a link or an app, not "the file" -
in the words of the relay target (issue 19), through the real services."""

from __future__ import annotations

import re

import pytest

from tests.dom0.test_links_apps import URL, _running
from tests.dom0.test_open_service import finish
from whonix_open.contract import SERVICE_APP, SERVICE_URL, Exit


@pytest.mark.parametrize(("service", "arg", "data", "what"), [
    (SERVICE_URL, "tor", URL, "the link"),
    (SERVICE_APP, "torbrowser+tor", b"\n", "the app torbrowser"),
])
def test_a_netvm_change_is_logged_as_what_was_open(broker, sim, service, arg, data, what):
    proc = _running(broker, sim, service, arg, data)
    (disp,) = sim.disposables()
    sim.set_property(disp, "netvm", "sys-firewall")
    err = finish(proc)
    assert proc.returncode == Exit.NETVM_CHANGED, err
    assert (f"whonix-open: refused (71): netvm of {disp} was changed (or could no longer be "
            f"watched) while {what} was open\n") in err
    assert re.search(r"\bfile\b", err) is None, err
    assert sim.disposables() == []
