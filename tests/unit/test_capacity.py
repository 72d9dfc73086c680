"""The node's capacity on a fake backend: a full node evicts the least valued idle instance, and
says so when nothing can be evicted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from scheduler.capacity import (
    AUTO_BYTES_PER_INSTANCE,
    AUTO_MEMORY_SHARE,
    Capacity,
    available_memory_bytes,
)
from scheduler.policy import FunctionPolicy
from scheduler.scheduler import AtCapacity, PoolSettings, Scheduler
from scheduler.testing import FakeBackend, FakeClock, fake_version

pytestmark = pytest.mark.timeout(5)
MIB = 1 << 20
A, B, C = (fake_version(name) for name in ("a", "b", "c"))


@asynccontextmanager
async def node(**settings: int) -> AsyncIterator[tuple[Scheduler, FakeBackend, FakeClock]]:
    clock, backend = FakeClock(), FakeBackend()
    pool = PoolSettings(**{"generic_pool_size": 0, **settings})
    scheduler = Scheduler(backend, pool, clock=clock, connect=backend.connect)
    await scheduler.start()
    try:
        yield scheduler, backend, clock
    finally:
        await scheduler.stop()
    assert not backend.running()


async def call(scheduler: Scheduler, version=A) -> str:  # type: ignore[no-untyped-def]
    lease = await scheduler.acquire(version)
    scheduler.release(lease)
    return lease.instance.id


def functions_running(scheduler: Scheduler) -> list[str]:
    return sorted(i.key[0] for i in scheduler.pool.instances.values() if i.key is not None)


async def test_a_full_node_evicts_the_idle_instance_whose_keep_alive_ends_first() -> None:
    async with node(max_total_instances=2) as (scheduler, backend, clock):
        first = await call(scheduler, A)
        clock.advance(1)
        await call(scheduler, B)
        clock.advance(1)
        await call(scheduler, C)  # a's keep-alive ends first: a makes room
        assert functions_running(scheduler) == ["b", "c"]
        assert scheduler.evictions_total == 1
        await scheduler.wait_until(lambda: first in backend.stopped, 1)


async def test_the_memory_cap_counts_each_function_at_its_memory_limit() -> None:
    big = fake_version("big", memory_bytes=400 * MIB)
    async with node(max_total_memory_bytes=600 * MIB) as (scheduler, _, clock):
        await call(scheduler, A)  # 256 MiB
        clock.advance(1)
        await call(scheduler, B)  # 512 MiB
        clock.advance(1)
        await call(scheduler, big)  # 400 MiB more: a and b must both go
        assert functions_running(scheduler) == ["big"]
        assert scheduler.evictions_total == 2
        assert scheduler.room.usage() == (1, 400 * MIB)


async def test_when_every_instance_is_busy_a_new_function_gets_at_capacity_at_once() -> None:
    async with node(max_total_instances=2) as (scheduler, backend, _):
        held = [await scheduler.acquire(A), await scheduler.acquire(B)]
        with pytest.raises(AtCapacity, match=r"at its capacity \(2 instances") as full:
            await scheduler.acquire(C)
        assert full.value.retry_after_s == 1
        assert len(backend.started) == 2
        # A version already running waits for its own instance instead.
        waiting = asyncio.create_task(scheduler.acquire(A))
        await scheduler.wait_until(lambda: scheduler.waiting(("a", 1)) == 1, 1)
        for lease in held:
            scheduler.release(lease)
        scheduler.release(await waiting)
        assert len(backend.started) == 2


async def test_instances_kept_for_min_warm_are_never_evicted() -> None:
    async with node(max_total_instances=1) as (scheduler, _, _clock):
        scheduler.configure(FunctionPolicy(), {"a": FunctionPolicy(min_warm=1)})
        await scheduler.ensure_warm(A)
        await scheduler.wait_until(lambda: functions_running(scheduler) == ["a"], 1)
        scheduler.tick()  # the reaper marks it kept on purpose
        await scheduler.wait_until(
            lambda: all(i.keep_until == float("inf") for i in scheduler.pool.instances.values()),
            1,
        )
        with pytest.raises(AtCapacity):
            await call(scheduler, B)
        assert functions_running(scheduler) == ["a"]


async def test_min_warm_and_the_generic_pool_only_use_free_room() -> None:
    async with node(max_total_instances=3, generic_pool_size=5) as (scheduler, backend, _):
        await scheduler.wait_until(lambda: scheduler.instance_counts()["generic"] == 3, 1)
        scheduler.configure(FunctionPolicy(), {"b": FunctionPolicy(min_warm=2)})
        await call(scheduler, A)  # specializes a generic instance; the refill stops at the cap
        await scheduler.ensure_warm(B)  # room for none more: nothing is evicted for min_warm
        await scheduler.wait_until(lambda: functions_running(scheduler) == ["a", "b", "b"], 1)
        assert scheduler.evictions_total == 0
        assert len(backend.running()) == 3


async def test_a_function_larger_than_the_node_is_refused_with_its_size() -> None:
    huge = fake_version("huge", memory_bytes=2048 * MIB)
    async with node(max_total_memory_bytes=1024 * MIB) as (scheduler, backend, _):
        with pytest.raises(AtCapacity, match=r'"huge" needs 2048 MiB') as full:
            await scheduler.acquire(huge)
        assert full.value.retry_after_s == 60
        with pytest.raises(AtCapacity, match="2048 MiB"):
            await scheduler.check(huge)
        assert not backend.started


async def test_a_deploy_check_evicts_an_idle_instance_when_the_node_is_full() -> None:
    async with node(max_total_instances=1) as (scheduler, _, _clock):
        await call(scheduler, A)
        checked = await scheduler.check(B)
        await scheduler.admit(checked, B)
        assert functions_running(scheduler) == ["b"]
        assert scheduler.evictions_total == 1


def test_automatic_caps_follow_the_machines_memory() -> None:
    auto = Capacity.resolve(0, 0)
    assert auto.max_memory_bytes == int(available_memory_bytes() * AUTO_MEMORY_SHARE)
    assert auto.max_instances == max(4, auto.max_memory_bytes // AUTO_BYTES_PER_INSTANCE)
    assert Capacity.resolve(7, 1 << 30) == Capacity(max_instances=7, max_memory_bytes=1 << 30)


class SlowStops(FakeBackend):
    """Instances that take their grace period to exit (handlers that ignore SIGTERM)."""

    def __init__(self) -> None:
        super().__init__()
        self.let_stop = asyncio.Event()

    async def stop_instance(self, handle: Any, *, grace_s: float) -> None:
        await self.let_stop.wait()
        await super().stop_instance(handle, grace_s=grace_s)


async def test_an_evicted_instance_counts_until_it_is_stopped() -> None:
    backend = SlowStops()
    pool = PoolSettings(generic_pool_size=0, max_total_instances=2)
    scheduler = Scheduler(backend, pool, clock=FakeClock(), connect=backend.connect)
    await scheduler.start()
    try:
        await call(scheduler, A)
        await call(scheduler, B)
        waiting = asyncio.create_task(call(scheduler, C))  # evicts a, whose stop is slow
        await scheduler.wait_until(lambda: scheduler.evictions_total == 1, 1)
        # a (stopping) and c (waiting for a's room) fill the node: evicting b would not do.
        with pytest.raises(AtCapacity):
            await call(scheduler, fake_version("d"))
        assert sorted(i.function or "" for i in backend.running()) == ["a", "b"]
        backend.let_stop.set()
        await waiting
        assert functions_running(scheduler) == ["b", "c"]
        assert sorted(i.function or "" for i in backend.running()) == ["b", "c"]
    finally:
        backend.let_stop.set()
        await scheduler.stop()


async def test_a_deleted_functions_busy_instance_counts_until_its_call_ends() -> None:
    async with node(max_total_instances=1) as (scheduler, backend, _):
        held = await scheduler.acquire(A)
        await scheduler.retire("a")  # its call runs on
        with pytest.raises(AtCapacity):
            await call(scheduler, B)
        assert len(backend.running()) == 1
        scheduler.release(held)  # the call ends: a stops, and b fits
        await scheduler.wait_until(lambda: not backend.running(), 1)
        await call(scheduler, B)
        assert functions_running(scheduler) == ["b"]
