"""Fake `libvirtaio` (qubes/tools/qubesd.py registers qubesd's asyncio loop
with it): our fake libvirt delivers its domain events on that loop."""

from __future__ import annotations

import asyncio

LOOP: asyncio.AbstractEventLoop | None = None


def virEventRegisterAsyncIOImpl(loop: asyncio.AbstractEventLoop | None = None) -> None:
    global LOOP
    LOOP = loop or asyncio.get_event_loop()
