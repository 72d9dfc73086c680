"""The one-pass cheapest plan against a direct search of every (keep, start, end); the
counts completed with the idle times not seen yet."""

from __future__ import annotations

import math
import random

import pytest

from scheduler.policy import cost_histogram
from scheduler.windows import cheapest_plan, with_unseen

BIN_S = 60.0


def cost(
    plan: tuple[float, float, float],
    samples: list[float],
    out_of_range: int,
    break_even_s: float,
    start_cost_s: float,
) -> float:
    """The plan's cost, counted idle time by idle time (out-of-range ones as infinitely long)."""
    keep, start, end = plan
    total = 0.0
    for x in [*samples, *[math.inf] * out_of_range]:
        if x <= keep:
            total += x
            continue
        total += keep
        if keep < start < x:
            total += start_cost_s  # the prewarm
            if start <= x <= end:
                total += x - start
                continue
            total += end - start
        total += break_even_s + start_cost_s  # cold
    return total


def direct(
    bins: list[tuple[int, int]], out_of_range: int, break_even_s: float, start_cost_s: float
) -> float:
    samples = [(i + 0.5) * BIN_S for i, c in bins for _ in range(c)]
    edges = [(i + 1) * BIN_S for i, _ in bins]
    starts = [i * BIN_S for i, _ in bins]
    plans = [(k, k, k) for k in [0.0, *edges]] + [
        (k, s, e) for k in [0.0, *edges] for s in starts if s > k for e in edges if e > s
    ]
    return min(cost(p, samples, out_of_range, break_even_s, start_cost_s) for p in plans)


@pytest.mark.parametrize("seed", range(40))
def test_the_one_pass_plan_costs_what_the_direct_search_finds(seed: int) -> None:
    rng = random.Random(seed)
    indexes = sorted(rng.sample(range(240), rng.randint(1, 12)))
    bins = [(i, rng.choice([1, 1, 2, 5, 20])) for i in indexes]
    out_of_range = rng.choice([0, 0, 1, 4])
    break_even_s = rng.choice([60.0, 600.0, 7200.0])
    start_cost_s = rng.choice([0.0, 0.0, 30.0, 300.0])
    samples = [(i + 0.5) * BIN_S for i, c in bins for _ in range(c)]
    plan = cheapest_plan(
        bins, out_of_range, bin_s=BIN_S, break_even_s=break_even_s, start_cost_s=start_cost_s
    )
    assert cost(plan, samples, out_of_range, break_even_s, start_cost_s) == pytest.approx(
        direct(bins, out_of_range, break_even_s, start_cost_s)
    )


def test_unseen_idle_times_fill_each_empty_stretch_and_the_one_above() -> None:
    bins = [0, 2, 0, 0, 1, 0, 0, 0, 0, 0]
    counts, beyond = with_unseen(bins, 0)
    # One idle time over bins 2-3 (between the filled 1 and 4), bin j weighing 1 / (j + 0.5).
    assert counts[2] == pytest.approx((1 / 2.5) / (1 / 2.5 + 1 / 3.5))
    assert counts[3] == pytest.approx((1 / 3.5) / (1 / 2.5 + 1 / 3.5))
    # One above the largest (bin 4, ending at 5 bins): bins 5 to 9, up to twice its end.
    above = [1 / (j + 0.5) for j in range(5, 10)]
    assert counts[5:] == pytest.approx([a / sum(above) for a in above])
    assert (counts[0], counts[1], counts[4], beyond) == (0.0, 2.0, 1.0, 0.0)
    assert sum(counts) == pytest.approx(3 + 2)


def test_unseen_above_the_range_counts_beyond_it_and_none_when_some_fell_beyond() -> None:
    counts, beyond = with_unseen([0, 0, 0, 0, 1, 0], 0)
    above = [1 / (j + 0.5) for j in range(5, 10)]  # bin 5 in the range, 6 to 9 beyond it
    assert counts[5] == pytest.approx(above[0] / sum(above))
    assert beyond == pytest.approx(sum(above[1:]) / sum(above))
    counts, beyond = with_unseen([0, 0, 0, 0, 1, 0], 2)
    assert (counts, beyond) == ([0.0, 0.0, 0.0, 0.0, 1.0, 0.0], 2.0)
    assert with_unseen([0, 0, 0], 0) == ([0.0, 0.0, 0.0], 0.0)  # nothing seen: nothing added


def test_a_plan_with_the_unseen_covers_gaps_longer_than_the_longest_seen() -> None:
    # Idle times of 5.5 to 8.5 minutes: on the bare counts the prewarmed instance is let go at
    # 9 minutes, the end of the longest; the next longer gap (as they have been growing) is a
    # cold start. With the unseen one above, it waits up to twice that.
    windows = {}
    for unseen in (False, True):
        policy = cost_histogram(1800, 240)
        policy.min_samples, policy.unseen = 1, unseen
        policy.memory_mb["f"] = 1024
        now = 0.0
        policy.on_arrival("f", now)
        for gap_min in (5.5, 6.5, 7.5, 8.5, 5.5, 6.5):
            policy.on_idle("f", now + 1)
            now += 1 + gap_min * 60
            policy.on_arrival("f", now)
        decision = policy.on_idle("f", now + 1)
        assert decision.prewarm_at is not None
        assert decision.prewarm_until is not None
        windows[unseen] = (
            decision.keep_until - now - 1,
            decision.prewarm_at - now - 1,
            decision.prewarm_until - now - 1,
        )
    assert windows == {False: (0.0, 300.0, 540.0), True: (0.0, 300.0, 1080.0)}
