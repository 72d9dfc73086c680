"""The scheduler's decisions on in-memory instances and a fake clock (`scheduler.testing`):
warm reuse, scale to zero, replacement, back-off, the queue bound, min-warm, prewarm, delete."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from scheduler.policy import Decision, FunctionPolicy
from scheduler.router import PolicyRouter
from scheduler.scheduler import (
    InstanceLost,
    PoolSettings,
    QueueFull,
    QueueTimeout,
    Scheduler,
    StartFailed,
)
from scheduler.simulator import FunctionTrace, simulate
from scheduler.testing import FakeBackend, FakeClock, FakeInstance, fake_version
from store.records import Version

pytestmark = pytest.mark.timeout(5)

VERSION = fake_version("resize")
KEY = ("resize", 1)
SETTLE_S = 1.0  # real seconds a state change may take on in-memory instances: all are at once


class Harness:
    def __init__(self, scheduler: Scheduler, backend: FakeBackend, clock: FakeClock) -> None:
        self.scheduler = scheduler
        self.backend = backend
        self.clock = clock

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.scheduler.wait_until(predicate, SETTLE_S)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.scheduler.tick()

    def handle(self, instance_id: str) -> FakeInstance:
        return self.backend.instances[instance_id]

    def ready(self, function: str = "resize") -> int:
        return sum(1 for i in self.scheduler.instances_of(function) if i.state.value == "ready")


@asynccontextmanager
async def running(**settings: float) -> AsyncIterator[Harness]:
    """A started scheduler on a fake backend (no generic pool unless asked), stopped after."""
    clock = FakeClock()
    backend = FakeBackend()
    pool = PoolSettings(**{"generic_pool_size": 0, **settings})  # type: ignore[arg-type]
    scheduler = Scheduler(backend, pool, clock=clock, connect=backend.connect)
    await scheduler.start()
    try:
        yield Harness(scheduler, backend, clock)
    finally:
        await scheduler.stop()
    assert not backend.running(), "the scheduler left instances running"


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with running() as harness:
        yield harness


async def call(h: Harness, version=VERSION) -> tuple[str, bool]:  # type: ignore[no-untyped-def]
    lease = await h.scheduler.acquire(version)
    reply, body = await lease.connection.call({"op": "invoke"}, b"{}")
    assert reply["ok"]
    assert body == b"{}"
    h.scheduler.release(lease)
    return lease.instance.id, lease.cold


async def test_a_second_call_reuses_the_warm_instance(h: Harness) -> None:
    first, cold = await call(h)
    assert cold
    second, cold = await call(h)
    assert (second, cold) == (first, False)
    assert h.backend.started == [first]
    assert h.handle(first).calls == 2


async def test_a_cold_start_specializes_a_generic_instance() -> None:
    async with running(generic_pool_size=1) as h:
        await h.until(lambda: h.scheduler.instance_counts()["generic"] == 1)
        generic = h.backend.started[0]
        instance, cold = await call(h)
        assert (instance, cold) == (generic, True)
        assert h.backend.specialized == [(generic, "resize")]
        # The generic pool is refilled off the call path.
        await h.until(lambda: h.scheduler.instance_counts()["generic"] == 1)
        assert len(h.backend.started) == 2


async def test_idle_instances_scale_to_zero_after_the_keep_alive(h: Harness) -> None:
    instance, _ = await call(h)
    h.advance(599)
    await asyncio.sleep(0)
    assert [i.id for i in h.scheduler.instances_of("resize")] == [instance]
    h.advance(2)
    await h.until(lambda: not h.scheduler.instances_of("resize"))
    assert h.backend.stopped == [instance]
    assert not h.handle(instance).alive
    _, cold = await call(h)
    assert cold


async def test_a_crashed_instance_is_replaced_at_the_next_call(h: Harness) -> None:
    instance, _ = await call(h)
    h.handle(instance).crash()
    await h.until(lambda: not h.scheduler.instances_of("resize"))
    replacement, cold = await call(h)
    assert cold
    assert replacement != instance


async def test_discard_reports_how_the_instance_ended(h: Harness) -> None:
    lease = await h.scheduler.acquire(VERSION)
    h.handle(lease.instance.id).crash()
    how = await h.scheduler.discard(lease, "died during a call", wait_exit_s=1.0)
    assert how == "killed by SIGKILL"
    assert not h.scheduler.instances_of("resize")


async def test_a_lease_on_an_instance_that_exited_is_lost_not_hung(h: Harness) -> None:
    instance, _ = await call(h)
    handle = h.handle(instance)
    handle.exited = asyncio.get_running_loop().create_future()  # exits unseen by the watcher
    handle.exited.set_result(-9)
    with pytest.raises(InstanceLost):
        await h.scheduler.acquire(VERSION)
    await h.until(lambda: not h.scheduler.instances_of("resize"))


async def test_an_import_that_hangs_fails_after_the_specialize_timeout() -> None:
    async with running(specialize_timeout_s=0.05) as h:
        h.backend.hang_imports.add("resize")
        with pytest.raises(StartFailed, match=r"took longer than 0\.05s"):
            await h.scheduler.acquire(VERSION)
        await h.until(lambda: not h.backend.running())


async def test_a_failing_import_backs_off_doubling(h: Harness) -> None:
    h.backend.import_errors["resize"] = "No module named 'PIL'"
    with pytest.raises(StartFailed, match="No module named 'PIL'"):
        await h.scheduler.acquire(VERSION)
    assert len(h.backend.started) == 1
    # Within the back-off, calls fail at once without starting anything.
    with pytest.raises(StartFailed, match="PIL"):
        await h.scheduler.acquire(VERSION)
    assert len(h.backend.started) == 1
    assert h.scheduler.start_backoff_remaining_s(KEY) == pytest.approx(0.5)
    h.advance(0.6)
    with pytest.raises(StartFailed):
        await h.scheduler.acquire(VERSION)
    assert len(h.backend.started) == 2
    assert h.scheduler.start_backoff_remaining_s(KEY) == pytest.approx(1.0)
    # Fixed: the next start after the back-off succeeds and clears it.
    del h.backend.import_errors["resize"]
    h.advance(1.1)
    _, cold = await call(h)
    assert cold
    assert h.scheduler.start_backoff_remaining_s(KEY) == 0


async def test_a_backend_that_cannot_start_instances_fails_the_call(h: Harness) -> None:
    h.backend.fail_starts = 1
    with pytest.raises(StartFailed, match="no room"):
        await h.scheduler.acquire(VERSION)


async def test_calls_queue_up_to_the_bound_then_get_queue_full() -> None:
    async with running(max_instances=1, max_queue=2) as h:
        held = await h.scheduler.acquire(VERSION)
        waiters = [asyncio.create_task(h.scheduler.acquire(VERSION)) for _ in range(2)]
        await h.until(lambda: h.scheduler.waiting(KEY) == 2)
        with pytest.raises(QueueFull) as full:
            await h.scheduler.acquire(VERSION)
        assert full.value.retry_after_s >= 1
        assert len(h.backend.started) == 1  # the instance limit holds
        h.scheduler.release(held)
        first = await waiters[0]
        assert (first.instance, first.cold) == (held.instance, False)
        assert not waiters[1].done()
        h.scheduler.release(first)
        h.scheduler.release(await waiters[1])
        assert h.scheduler.waiting(KEY) == 0


async def test_a_queued_call_times_out() -> None:
    async with running(max_instances=1, queue_timeout_s=0.05) as h:
        held = await h.scheduler.acquire(VERSION)
        with pytest.raises(QueueTimeout, match=r"within 0\.05s"):
            await h.scheduler.acquire(VERSION)
        assert h.scheduler.waiting(KEY) == 0
        h.scheduler.release(held)


async def test_concurrency_puts_several_calls_on_one_instance(h: Harness) -> None:
    version = fake_version("resize", concurrency=3)
    leases = [await h.scheduler.acquire(version) for _ in range(3)]
    assert len({lease.instance.id for lease in leases}) == 1
    assert len(h.backend.started) == 1
    for lease in leases:
        h.scheduler.release(lease)


async def test_min_warm_keeps_instances_past_the_keep_alive_and_replaces_crashed_ones(
    h: Harness,
) -> None:
    h.scheduler.configure(FunctionPolicy(min_warm=2), {})
    await h.scheduler.ensure_warm(VERSION)
    await h.until(lambda: h.ready() == 2)
    h.advance(3600)
    await asyncio.sleep(0)
    assert h.ready() == 2
    assert not h.backend.stopped
    h.handle(h.scheduler.instances_of("resize")[0].id).crash()
    await h.until(lambda: len(h.backend.started) == 3 and h.ready() == 2)


async def test_the_histogram_policy_prewarms_before_a_regular_call(h: Harness) -> None:
    h.scheduler.configure(FunctionPolicy(prewarm="histogram"), {})
    for _ in range(8):  # a call every 10 minutes: the histogram learns the gap
        await call(h)
        h.advance(600)
        await asyncio.sleep(0)
    await call(h)
    # Representative now: unloaded at once after the call, prewarmed at 0.9 x the gap.
    await h.until(lambda: not h.scheduler.instances_of("resize"))
    starts = len(h.backend.started)
    h.advance(500)
    await asyncio.sleep(0)
    assert len(h.backend.started) == starts
    h.advance(60)
    await h.until(lambda: h.ready() == 1)
    assert h.scheduler.prewarm_starts == {"resize": 1}
    h.advance(40)
    _, cold = await call(h)
    assert not cold


async def test_deleting_a_function_fails_its_queued_calls_and_stops_it_after_the_last_call() -> (
    None
):
    async with running(max_instances=1) as h:
        held = await h.scheduler.acquire(VERSION)
        queued = asyncio.create_task(h.scheduler.acquire(VERSION))
        await h.until(lambda: h.scheduler.waiting(KEY) == 1)
        await h.scheduler.retire("resize")
        with pytest.raises(StartFailed, match='"resize" was deleted'):
            await queued
        assert h.handle(held.instance.id).alive  # busy: stopped once its call is over
        h.scheduler.release(held)
        await h.until(lambda: not h.backend.running())
        assert not h.scheduler.knows("resize")


async def test_a_new_active_version_is_warmed_and_the_old_one_forgotten(h: Harness) -> None:
    h.scheduler.configure(FunctionPolicy(min_warm=1), {})
    await h.scheduler.ensure_warm(VERSION)
    await h.until(lambda: h.ready() == 1)
    v2 = fake_version("resize", 2)
    await h.scheduler.ensure_warm(v2)
    await h.until(lambda: any(i.key == ("resize", 2) for i in h.scheduler.instances_of("resize")))
    # The old version's instance is no longer kept at min_warm: it scales to zero.
    h.advance(601)
    await h.until(lambda: [i.key for i in h.scheduler.instances_of("resize")] == [("resize", 2)])


async def test_shutdown_fails_waiting_calls_and_stops_every_instance() -> None:
    clock, backend = FakeClock(), FakeBackend()
    scheduler = Scheduler(
        backend,
        PoolSettings(max_instances=1, generic_pool_size=1),
        clock=clock,
        connect=backend.connect,
    )
    await scheduler.start()
    held = await scheduler.acquire(VERSION)
    queued = asyncio.create_task(scheduler.acquire(VERSION))
    await scheduler.wait_until(lambda: scheduler.waiting(KEY) == 1, SETTLE_S)
    await scheduler.stop()
    with pytest.raises(StartFailed, match="shutting down"):
        await queued
    assert held.instance.id in backend.stopped
    assert not backend.running()
    assert backend.closed


async def test_versions_no_longer_active_are_forgotten_once_their_instances_are_gone(
    h: Harness,
) -> None:
    # (fixed: under adaptive, a function seen a few times may be kept up to 3 keep-alives)
    h.scheduler.configure(FunctionPolicy(prewarm="fixed", keep_alive_s=600), {})
    for number in range(1, 6):  # five deploys, each called once
        version = fake_version("resize", number)
        await h.scheduler.ensure_warm(version)
        await call(h, version)
    h.advance(601)
    await h.until(lambda: not h.scheduler.instances_of("resize"))
    assert list(h.scheduler._versions) == [("resize", 5)]  # the active one only


async def test_an_instance_whose_stop_was_still_to_run_is_stopped_at_shutdown() -> None:
    async with running() as h:
        lease = await h.scheduler.acquire(VERSION)
        await h.scheduler.retire("resize")  # busy: out of the pool, stopped after its call
        h.scheduler.release(lease)  # its stop is a task that has not run when shutdown comes
    assert not h.backend.running()


class Recorder:
    """A policy that records the decisions of the one it wraps."""

    def __init__(self, policy: PolicyRouter) -> None:
        self.policy = policy
        self.decisions: list[tuple[float, Decision]] = []

    @property
    def name(self) -> str:
        return self.policy.name

    def on_arrival(self, function: str, now: float) -> None:
        self.policy.on_arrival(function, now)

    def on_idle(self, function: str, now: float) -> Decision:
        decision = self.policy.on_idle(function, now)
        self.decisions.append((now, decision))
        return decision


async def replay_live(
    h: Harness, trace: FunctionTrace, version: Version
) -> tuple[Recorder, list[bool]]:
    """Run `trace` live on one instance of `version` that takes several calls at once (the
    simulator's model), the fake clock stopping at every prewarm the policy asked for; the
    recorded decisions and whether each call was cold."""
    live = Recorder(h.scheduler.policies)
    h.scheduler.pool.policy = live
    events = sorted(
        [(t, 1, "call") for t in trace.arrivals]
        + [(t + trace.duration_s, 0, "done") for t in trace.arrivals]
    )  # a call that ends at the time another arrives frees its slot first
    leases, colds = [], []
    pool = h.scheduler.pool
    for at, _, kind in events:
        while due := [
            t
            for t, due_at in ((pool.next_prewarm(), at), (pool.next_expiry(), at - 1e-9))
            if t is not None and t <= due_at
        ]:  # stop at each prewarm and keep-alive end before the event, as time passes
            h.advance(max(0.0, min(due) - h.clock.now))
            await h.until(
                lambda: (
                    all(
                        t is None or t > h.clock.now
                        for t in (pool.next_prewarm(), pool.next_expiry())
                    )
                    and not pool.starting(KEY)
                )
            )
        h.advance(at - h.clock.now)
        if kind == "call":
            lease = await h.scheduler.acquire(version)
            leases.append(lease)
            colds.append(lease.cold)
        else:
            h.scheduler.release(leases.pop(0))
    return live, colds


@pytest.mark.parametrize("prewarm", ["fixed", "adaptive"])
async def test_live_decisions_match_the_simulator_on_overlapping_calls(
    h: Harness, prewarm: str
) -> None:
    # The simulator's trace of overlapping calls (tests/unit/test_simulator.py), run live: the
    # scheduler asks the policy the same questions at the same times and gets the same answers.
    from tests.unit.test_simulator import overlapping_then_one_more

    h.scheduler.configure(FunctionPolicy(prewarm=prewarm, keep_alive_s=600), {})
    trace = overlapping_then_one_more(start=h.clock.now)
    trace.name = "resize"
    version = fake_version("resize", concurrency=4)
    simulated = Recorder(PolicyRouter(h.scheduler.policies.default))
    # The cost plan weighs memory: the simulator's router knows the version's, as live.
    simulated.policy.note_memory("resize", version.config.memory_bytes / (1 << 20))
    result = simulate([trace], simulated, end_s=trace.arrivals[-1] + 60)
    live, colds = await replay_live(h, trace, version)
    assert live.decisions == simulated.decisions
    assert len(live.decisions) == 2
    if prewarm == "fixed":
        assert [d.keep_until for _, d in live.decisions] == [
            trace.arrivals[30] + 60 + 600,
            trace.arrivals[31] + 60 + 600,
        ]
    assert sum(colds) == result.cold == 1
    assert len(h.backend.started) == 1


async def test_live_prewarms_for_a_timer_as_the_simulator_does(h: Harness) -> None:
    # The default policy (adaptive) on an hourly timer with one other call at a different
    # minute of each hour (tests/unit/test_policy.py): after three firings it loads an
    # instance for the minute of the next one. Live, the scheduler starts those prewarms at
    # the times the simulator assumes, and the same calls are cold.
    origin = 60.0 * math.ceil(h.clock.now / 60.0)
    minutes = [
        m
        for hour, other in enumerate([14, 26, 38, 22, 46, 10, 34])
        for m in (60 * hour, 60 * hour + other)
    ]
    trace = FunctionTrace(
        "resize", [origin + m * 60.0 + 30 for m in [*minutes, 420]], duration_s=1.0, memory_mb=2048
    )
    simulated = Recorder(PolicyRouter(h.scheduler.policies.default))
    simulated.policy.note_memory("resize", 2048)
    result = simulate([trace], simulated, end_s=trace.arrivals[-1] + 1)
    live, colds = await replay_live(
        h, trace, fake_version("resize", concurrency=4, memory_bytes=2048 << 20)
    )
    assert live.decisions == simulated.decisions
    decided = dict(live.decisions)[origin + 394 * 60.0 + 31]  # idle after minute 394's call
    assert (decided.prewarm_at, decided.prewarm_until) == (origin + 420 * 60.0, origin + 421 * 60.0)
    assert not colds[-1]  # the firing of minute 420 found the prewarmed instance
    assert sum(colds) == result.cold
    assert len(h.backend.started) == result.starts


@pytest.mark.parametrize("prewarm", ["fixed", "adaptive", "histogram"])
async def test_a_shorter_keep_alive_applies_at_once_to_idle_instances_of_a_learning_function(
    h: Harness, prewarm: str
) -> None:
    h.scheduler.configure(FunctionPolicy(prewarm=prewarm, keep_alive_s=600), {})
    await call(h)
    h.scheduler.configure(FunctionPolicy(prewarm=prewarm, keep_alive_s=0), {})
    await h.until(lambda: not h.scheduler.instances_of("resize"))


async def test_adaptive_keeps_a_function_seen_a_few_times_at_most_three_keep_alives(
    h: Harness,
) -> None:
    # Planned on the population prior (fewer than 20 idle times), adaptive may keep an idle
    # instance longer than the keep-alive, never more than three of them; a shorter keep-alive
    # set meanwhile bounds it at once.
    h.scheduler.configure(FunctionPolicy(prewarm="adaptive", keep_alive_s=100), {})
    await call(h)
    h.advance(50)  # one idle time of 50 s: its plan is now the prior's and its own
    await call(h)
    (instance,) = h.scheduler.instances_of("resize")
    assert instance.keep_until == h.clock.now + 300  # the prior says keep; bounded at 3 x 100 s
    h.scheduler.configure(FunctionPolicy(prewarm="adaptive", keep_alive_s=10), {})
    assert instance.keep_until == h.clock.now + 30
    h.advance(30)
    await h.until(lambda: not h.scheduler.instances_of("resize"))
