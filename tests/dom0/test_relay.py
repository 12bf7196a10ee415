"""relay() on its own: the last netvm check before the file is sent."""

import pytest

from whonix_open.contract import Exit
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.relay import NetvmAlarm, relay


class NoService:
    def run_service(self, *args, **kwargs):
        raise AssertionError("the file must not be sent")


def test_a_netvm_change_before_the_relay_sends_nothing():
    alarm = NetvmAlarm()
    try:
        alarm.poke()
        with pytest.raises(Refusal) as e:
            relay(NoService(), "disp1", alarm, view_only=False, caller_in=0, caller_out=1,
                  connect_timeout=5)
        assert e.value.code == Exit.NETVM_CHANGED
    finally:
        alarm.close()
