"""The link and app service tests of tests/dom0/, run again through the real
qubesadmin library against the qubesd stand-in (this directory's conftest
swaps the `broker` fixture), and dom0's whonix-open-app the same way."""

from __future__ import annotations

from tests.dom0.test_launch import *  # noqa: F403 - the same tests, the real library
from tests.dom0.test_links_apps import *  # noqa: F403

