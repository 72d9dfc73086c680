"""The live router's histograms share one record of idle times per function and plan lazily: on
hand-made sequences they decide exactly as one histogram per kind, each fed every call, did."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from scheduler.idle_times import stale_at
from scheduler.policy import (
    Decision,
    FunctionPolicy,
    HybridHistogram,
    adaptive_histogram,
    cost_histogram,
)
from scheduler.router import PolicyRouter

KINDS = ["adaptive", "histogram", "fixed", "histogram-cost"]


def gaps_s(seed: int, count: int) -> list[float]:
    """Idle times of a bursty function with a timer: mostly seconds, some an hour, a few over
    the histogram's 4 hours, some of them zero (calls that join at once)."""
    rng = random.Random(seed)
    return [
        rng.choice([0.0, rng.uniform(0, 50), rng.uniform(0, 50), 3600 - rng.uniform(0, 90)])
        if rng.random() > 0.03
        else rng.uniform(4 * 3600, 6 * 3600)
        for _ in range(count)
    ]


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("switch_every", [0, 37, 400])
def test_the_router_decides_as_one_eagerly_fed_histogram_per_kind(
    deferred: bool, switch_every: int
) -> None:
    # The twins: one histogram per kind, each with its own record, all fed every arrival and
    # every idle time (what the router did before it shared one record among them).
    twins: dict[str, HybridHistogram] = {
        "histogram": HybridHistogram(),
        "histogram-cost": cost_histogram(),
        "adaptive": adaptive_histogram(),
    }
    router = PolicyRouter(FunctionPolicy(prewarm="adaptive", keep_alive_s=600))
    jobs: dict[str, list[Callable[[], None]]] = {"router": [], "twins": []}
    if deferred:  # live: recomputed on the event loop, later than the call that found it stale
        router.defer_to(jobs["router"].append)
        for twin in twins.values():
            twin.defer = jobs["twins"].append
    router.note_memory("f", 512)
    for twin in twins.values():
        if twin.break_even_s is not None:
            twin.memory_mb["f"] = 512
    now = 1000.0
    kinds_used = set()
    for call, gap_s in enumerate(gaps_s(seed=switch_every, count=3000)):
        kind = KINDS[(call // switch_every) % len(KINDS)] if switch_every else "adaptive"
        router.overrides["f"] = FunctionPolicy(prewarm=kind, keep_alive_s=600)
        kinds_used.add(kind)
        router.on_arrival("f", now)
        for twin in twins.values():
            twin.on_arrival("f", now)
        if call % 3 == 0:  # the loop turns now and then, not after every call
            for queue in jobs.values():
                for job in queue:
                    job()
                queue.clear()
        now += 0.25
        decided = router.on_idle("f", now)
        expected = Decision(keep_until=now + 600)
        for twin_kind, twin in twins.items():
            if twin_kind == kind:
                expected = twin.decide("f", now, 600)
            else:
                twin.note_idle("f", now)
        assert decided == expected, (call, kind)
        assert router.keeps_for_keep_alive("f") == (kind == "fixed" or twins[kind].learning("f"))
        now += gap_s
    assert kinds_used == (set(KINDS) if switch_every else {"adaptive"})


def test_one_call_updates_one_histogram_for_every_kind() -> None:
    router = PolicyRouter(FunctionPolicy(prewarm="fixed"))
    router.on_arrival("f", 0.0)
    router.on_idle("f", 1.0)
    router.on_arrival("f", 31.0)
    records = {id(h._functions["f"]) for h in router.histograms.values()}
    assert len(records) == 1
    assert router.histogram._functions["f"].bins[0] == 1
    # No kind has planned for a function on the fixed keep-alive: nothing to keep fresh.
    assert router.histogram._functions["f"].plans == {}


def test_histograms_with_other_bins_keep_their_own_record() -> None:
    router = PolicyRouter(FunctionPolicy(prewarm="histogram"))
    fast = HybridHistogram(bin_s=0.1, range_s=5.0, min_samples=3)
    router.use_histograms({**router.histograms, "histogram": fast})
    now = 0.0
    for _ in range(5):
        router.on_arrival("f", now)
        router.on_idle("f", now + 0.01)
        now += 0.5
    assert fast._functions["f"].bins[4] == 4  # 0.49 s idle: the fifth 0.1 s bin
    assert router.histograms["adaptive"]._functions["f"].bins[0] == 4
    with pytest.raises(TypeError):
        router.histograms["histogram"] = HybridHistogram()  # type: ignore[index]
    with pytest.raises(ValueError, match="other bins"):
        fast.learn_from(router.histograms["adaptive"])


def test_a_plan_is_stale_once_the_histogram_grew_by_one_percent() -> None:
    def first_stale(samples: int) -> int:  # the rule as written before: checked every sample
        n = samples + 1
        while n - samples < max(1, n // 100):
            n += 1
        return n

    for samples in [*range(0, 2500), *(10**k + d for k in (4, 5, 6) for d in (-101, -1, 0, 99))]:
        assert stale_at(samples) == first_stale(samples), samples


def test_a_histogram_swapped_in_plans_from_what_the_others_learnt() -> None:
    router = PolicyRouter(FunctionPolicy(prewarm="adaptive"))
    twin = PolicyRouter(FunctionPolicy(prewarm="adaptive"))
    now = 0.0
    for gap_s in gaps_s(seed=1, count=300):
        for policy in (router, twin):
            policy.on_arrival("f", now)
            policy.on_idle("f", now + 1)
        now += 1 + gap_s
    router.use_histograms({**router.histograms, "histogram": HybridHistogram()})
    assert router.histograms["adaptive"]._functions["f"].in_range > 200
    for kind in ("adaptive", "histogram"):
        for policy in (router, twin):
            policy.overrides["f"] = FunctionPolicy(prewarm=kind)
            policy.on_arrival("f", now)
        assert router.on_idle("f", now + 1) == twin.on_idle("f", now + 1)
        now += 31
