from __future__ import annotations

import asyncio

import uvloop


async def test_tests_run_on_uvloop_like_the_platform() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
