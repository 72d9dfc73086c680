"""The scheduler of a gateway that is not a function's home (gateway/routing.py) keeps nothing
of it ahead of calls: `let_go` stops its idle instances at once and its busy ones after their
call, and no `min_warm` or prewarm starts one (fake backend, fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.policy import FunctionPolicy
from tests.unit.test_scheduler import VERSION, Harness, call, h  # noqa: F401 - h: a fixture

pytestmark = pytest.mark.timeout(5)


async def test_let_go_stops_idle_instances_now_and_busy_ones_after_their_call(
    h: Harness,  # noqa: F811 - the fixture imported above
) -> None:
    h.scheduler.configure(FunctionPolicy(min_warm=1), {})
    await h.scheduler.ensure_warm(VERSION)
    await h.until(lambda: h.ready() == 1)
    busy = await h.scheduler.acquire(VERSION)
    assert not busy.cold
    await call(h)  # a second instance, idle after its call
    assert h.ready() == 2
    home = {"resize": True}
    h.scheduler.keeps_warm = lambda function: home.get(function, True)
    assert h.scheduler.let_go() == 0  # still its home: nothing moves

    home["resize"] = False  # the function's home is another gateway now
    assert h.scheduler.let_go() == 2
    assert h.scheduler.instances_of("resize") == []
    await h.until(lambda: len(h.backend.stopped) == 1)  # the idle one, not after 10 min
    assert busy.instance.id not in h.backend.stopped
    h.scheduler.release(busy)  # its call ends: stopped, and min_warm does not restart it
    await h.until(lambda: len(h.backend.stopped) == 2)
    await asyncio.sleep(0)
    assert len(h.backend.started) == 2
    assert not h.backend.running()

    # Neither min_warm nor a new active version starts an instance here.
    await h.scheduler.ensure_warm(VERSION)
    assert h.scheduler.instances_of("resize") == []
    # A call still sent here (a peer that had not read the new list) is served, and its
    # instance let go at the next read.
    _, cold = await call(h)
    assert cold
    assert h.scheduler.let_go() == 1
    await h.until(lambda: not h.backend.running())


async def test_no_prewarm_where_the_function_is_not_home(
    h: Harness,  # noqa: F811 - the fixture imported above
) -> None:
    h.scheduler.configure(FunctionPolicy(prewarm="histogram"), {})
    for _ in range(8):  # a call every 10 minutes: the histogram prewarms before the next one
        await call(h)
        h.advance(600)
        await asyncio.sleep(0)
    await call(h)
    await h.until(lambda: not h.scheduler.instances_of("resize"))
    starts = len(h.backend.started)
    h.scheduler.keeps_warm = lambda function: False
    h.advance(600)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(h.backend.started) == starts
    assert h.scheduler.prewarm_starts == {}
