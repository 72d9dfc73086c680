"""When the scheduler asks its backend for a version's template (`Upkeep._keep_template`): after
the version's second import on the node, or after a slow first one; never for a deploy's
check of a fast import. In-memory instances and a fake clock (`scheduler.testing`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import pytest

from scheduler.scheduler import PoolSettings, Scheduler
from scheduler.testing import FakeBackend, FakeClock, fake_version
from store.records import Version

pytestmark = pytest.mark.timeout(5)

VERSION = fake_version("resize")


class TemplateFakeBackend(FakeBackend):
    """A fake backend that keeps a record of the templates asked for (and makes none)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, int, float]] = []

    def keep_template(
        self,
        version: Version,
        meta: Mapping[str, object],
        code: bytes,
        *,
        keep_alive_s: float,
        fits: Callable[[], bool],
    ) -> None:
        assert meta["function"] == version.function
        self.asked.append((version.function, version.version, keep_alive_s))

    def has_template(self, version: Version) -> bool:
        return False

    def drop_templates(self, function: str, keep_version: int | None = None) -> int:
        return 0

    def give_template_room(self) -> bool:
        return False

    def template_usage(self) -> tuple[int, int]:
        return 0, 0


@asynccontextmanager
async def started(**settings: float) -> AsyncIterator[tuple[Scheduler, TemplateFakeBackend]]:
    backend = TemplateFakeBackend()
    clock = FakeClock()
    pool = PoolSettings(**{"generic_pool_size": 0, "keep_alive_s": 60.0, **settings})  # type: ignore[arg-type]
    scheduler = Scheduler(backend, pool, clock=clock, connect=backend.connect)
    await scheduler.start()
    try:
        yield scheduler, backend
    finally:
        await scheduler.stop()


async def _call(scheduler: Scheduler, version: Version = VERSION) -> bool:
    lease = await scheduler.acquire(version)
    scheduler.release(lease)
    return lease.cold


async def _scale_to_zero(scheduler: Scheduler) -> None:
    for instance in scheduler.instances_of(VERSION.function):
        instance.keep_until = 0.0  # (whatever the policy planned: idle past it now)
    scheduler.tick()
    await scheduler.wait_until(lambda: not scheduler.instances_of(VERSION.function), 1.0)


async def test_a_template_is_asked_for_at_the_second_import_not_the_first() -> None:
    async with started() as (scheduler, backend):
        assert await _call(scheduler)  # cold: its first import on this node
        assert not await _call(scheduler)  # warm
        assert backend.asked == []
        await _scale_to_zero(scheduler)
        assert await _call(scheduler)  # cold again: its second import
        assert backend.asked == [("resize", 1, 60.0)]


async def test_a_deploys_check_of_a_fast_import_asks_for_none() -> None:
    async with started() as (scheduler, backend):
        candidate = dataclasses.replace(VERSION, version=0)
        checked = await scheduler.check(candidate)
        await scheduler.admit(checked, VERSION)
        assert not await _call(scheduler)  # the check's instance serves it
        assert backend.asked == []
        await _scale_to_zero(scheduler)
        assert await _call(scheduler)  # the second import: the check's was the first
        assert backend.asked == [("resize", 1, 60.0)]


async def test_a_slow_first_import_asks_for_one_at_once() -> None:
    async with started() as (scheduler, backend):
        backend.import_cpu_ms = 80.0  # (as requests' import: over the 30 ms default)
        candidate = dataclasses.replace(VERSION, version=0)
        await scheduler.admit(await scheduler.check(candidate), VERSION)
        [asking] = [t for t in asyncio.all_tasks() if t.get_name().startswith("template of")]
        await asking  # (in the background: it reads the function's environment first)
        assert backend.asked == [("resize", 1, 60.0)]
