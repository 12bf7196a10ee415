"""The dom0 service tests of tests/dom0/, run again through the real
qubesadmin library against the qubesd stand-in (this directory's conftest
swaps the `broker` fixture): every exit code, every cleanup path (signals at
each create step, stale sessions), the netvm watchdog over admin.Events, the
preloads, whonix.RoutingStatus."""

from __future__ import annotations

from tests.dom0.test_hardening import *  # noqa: F403 - the same tests, the real library
from tests.dom0.test_open_service import *  # noqa: F403
from tests.dom0.test_preloads import *  # noqa: F403
from tests.dom0.test_routing_status import *  # noqa: F403
