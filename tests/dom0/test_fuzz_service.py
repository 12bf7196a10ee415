"""Hostile service arguments against the real service process: only a valid,
configured profile name gets past validation, nothing crashes it, and a
refused request makes no Admin API call at all."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dom0.conftest import Broker
from whonix_open.contract import SERVICE_OPEN, Exit, is_profile_name
from whonix_open.sim.harness import SimQubes

# What qrexec lets through is [A-Za-z0-9_.+-]; the rest is fuzzed too, in case
# an older or buggy qrexec passes it on (no NUL: it cannot be in an environment).
ALPHABET = string.ascii_letters + string.digits + "_.+-" + " /\\$`;'\"\n\téß\x7f"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(arg=st.one_of(st.text(alphabet=ALPHABET, max_size=40),
                     st.sampled_from(["tor", "offline", "", "tor-2", "-", "+", "..", "a" * 31])))
def test_fuzzed_argument(tmp_path_factory, arg):
    tmp = tmp_path_factory.mktemp("fuzz")
    sim = SimQubes.create(tmp / "sim")
    sim.set_fault("disposable_behaviour", "noop")
    broker = Broker(sim, tmp)
    env = broker.env(SERVICE_OPEN, arg, "anon-whonix")
    r = broker.run(b"a.txt".ljust(256, b"\0") + b"x", arg=arg, env=env)
    assert "Traceback" not in r.err
    if arg in ("tor", "offline"):
        assert r.code == Exit.OK, r.err
    else:
        assert r.code == Exit.BAD_REQUEST, r.err
        assert sim.calls() == []
        # A malformed argument is never echoed into dom0's log.
        expected = (f"unknown profile {arg}" if is_profile_name(arg)
                    else "no profile named (the argument must be the profile)" if arg == ""
                    else "malformed service argument")
        assert f"refused (64): {expected}\n" in r.err
