"""Waiting for an event with a time limit, in loops that must stop when cancelled."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes; True if it was set.

    Not `asyncio.wait_for`: in Python 3.11 it can swallow a cancellation that arrives just as
    the event is set, and a loop around it then never stops (seen as a hung shutdown).
    `asyncio.timeout` lets an outside cancellation through."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
