"""relay() on its own: the last netvm check before the file is sent."""

import os
import time

import pytest

from whonix_open.contract import Exit
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.relay import NetvmAlarm, relay, wait_for_caller
from whonix_open.dom0.relay_target import RelayTarget


class NoService:
    def run_service(self, *args, **kwargs):
        raise AssertionError("the file must not be sent")


def test_a_netvm_change_before_the_relay_sends_nothing():
    alarm = NetvmAlarm()
    try:
        alarm.poke()
        with pytest.raises(Refusal) as e:
            relay(NoService(), "disp1", alarm, RelayTarget("qubes.OpenInVM", discard_output=False),
                  caller_in=0, caller_out=1,
                  connect_timeout=5, deadline=time.monotonic() + 60)
        assert e.value.code == Exit.NETVM_CHANGED
    finally:
        alarm.close()


def test_wait_for_caller_returns_once_data_is_there_without_reading_it():
    r, w = os.pipe()
    try:
        os.write(w, b"header")
        wait_for_caller(r, 5)
        assert os.read(r, 100) == b"header"  # still all there: nothing was consumed
    finally:
        os.close(r)
        os.close(w)


def test_wait_for_caller_refuses_silence_and_an_early_hang_up():
    r, w = os.pipe()
    try:
        with pytest.raises(Refusal) as e:
            wait_for_caller(r, 0.2)
        assert e.value.code == Exit.CALLER_SILENT and "nothing within" in e.value.reason
        os.close(w)
        w = -1
        with pytest.raises(Refusal) as e:
            wait_for_caller(r, 5)
        assert e.value.code == Exit.CALLER_SILENT and "hung up" in e.value.reason
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
