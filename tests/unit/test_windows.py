"""The one-pass cheapest plan against a direct search of every (keep, start, end)."""

from __future__ import annotations

import math
import random

import pytest

from scheduler.windows import cheapest_plan

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
