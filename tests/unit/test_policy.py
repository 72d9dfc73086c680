"""Each policy's decisions on small hand-made arrival sequences (the clock is just numbers)."""

from __future__ import annotations

import math

import pytest

from scheduler.policy import Decision, FixedKeepAlive, HybridHistogram, parse_policy
from scheduler.prior import POPULATION_PRIOR, prior_shares

MIN = 60.0


def test_fixed_keeps_every_idle_instance_for_the_same_time() -> None:
    policy = FixedKeepAlive(600)
    policy.on_arrival("f", 0)
    assert policy.on_idle("f", 10) == Decision(keep_until=610)


def feed(policy: HybridHistogram, idle_times_s: list[float], start: float = 0.0) -> float:
    """Calls that finish at once, separated by the given idle times; returns the clock."""
    now = start
    policy.on_arrival("f", now)
    for idle_s in idle_times_s:
        policy.on_idle("f", now)
        now += idle_s
        policy.on_arrival("f", now)
    return now


def test_histogram_keeps_long_while_it_has_too_few_samples() -> None:
    policy = HybridHistogram()
    now = feed(policy, [5 * MIN] * 4)
    assert policy.on_idle("f", now) == Decision(keep_until=now + 4 * 3600)


def test_histogram_unloads_then_prewarms_around_a_regular_idle_time() -> None:
    policy = HybridHistogram()
    now = feed(policy, [30 * MIN + 10] * 20)  # always 30 minutes: all in bin 30
    decision = policy.on_idle("f", now)
    assert decision.keep_until == now  # unloaded at once
    assert decision.prewarm_at == pytest.approx(now + 0.9 * 30 * MIN)
    assert decision.prewarm_until == pytest.approx(now + 1.1 * 31 * MIN)


def test_histogram_keeps_warm_when_calls_come_within_a_minute() -> None:
    policy = HybridHistogram()
    now = feed(policy, [20.0] * 10 + [150.0])  # mostly bin 0, one idle time in bin 2
    decision = policy.on_idle("f", now)
    assert decision.prewarm_at is None
    assert decision.keep_until == pytest.approx(now + 1.1 * 3 * MIN)


def test_histogram_falls_back_when_idle_times_are_spread_evenly() -> None:
    policy = HybridHistogram()
    # One idle time in every bin: a flat histogram (coefficient of variation 0).
    now = feed(policy, [b * MIN + 1 for b in range(240)])
    assert policy.on_idle("f", now) == Decision(keep_until=now + 4 * 3600)


def test_histogram_forecasts_when_idle_times_fall_beyond_its_range() -> None:
    policy = HybridHistogram()
    now = feed(policy, [6 * 3600.0] * 6)  # every 6 hours: out of the 4-hour range
    decision = policy.on_idle("f", now)
    assert decision.keep_until == now
    assert decision.prewarm_at == pytest.approx(now + 0.85 * 6 * 3600)
    assert decision.prewarm_until == pytest.approx(now + 1.15 * 6 * 3600)


def test_histograms_are_per_function() -> None:
    policy = HybridHistogram()
    feed(policy, [30 * MIN] * 20)
    assert policy.on_idle("other", 0) == Decision(keep_until=4 * 3600)


def test_cost_window_keeps_warm_only_where_it_pays() -> None:
    # Break-even 10 min: a cold start costs as much as 10 minutes warm.
    policy = HybridHistogram(break_even_s=600, min_samples=3, prewarm_margin=1.0, keep_margin=1.0)
    now = feed(policy, [30 * MIN + 10] * 5)  # every 30 min: prewarm just before, not 30 min warm
    decision = policy.on_idle("f", now)
    assert decision.keep_until == now
    assert (decision.prewarm_at, decision.prewarm_until) == (now + 30 * MIN, now + 31 * MIN)

    policy = HybridHistogram(break_even_s=600, min_samples=3)
    # Gaps all over the place and long: no window is worth its warm time; unload at once.
    now = feed(policy, [m * MIN for m in (50, 130, 200, 75, 170, 110)], start=0)
    decision = policy.on_idle("f", now)
    assert decision.keep_until == now
    assert decision.prewarm_at is None or decision.prewarm_until == decision.prewarm_at


def test_cost_plan_keeps_for_a_burst_then_prewarms_for_the_next() -> None:
    # An hourly timer that fires a burst of calls 20 s apart: the short gaps are worth keeping
    # warm for, the hour is worth a prewarm just before it, and nothing in between.
    policy = HybridHistogram(break_even_s=600, min_samples=3, prewarm_margin=1.0, keep_margin=1.0)
    gaps = ([20.0] * 4 + [60 * MIN - 80]) * 4
    now = feed(policy, gaps)
    decision = policy.on_idle("f", now)
    assert decision.keep_until == now + MIN  # the first bin covers the 20 s gaps
    assert (decision.prewarm_at, decision.prewarm_until) == (now + 58 * MIN, now + 59 * MIN)


def test_cost_window_weighs_memory() -> None:
    small = HybridHistogram(break_even_s=600, min_samples=3, memory_mb={"f": 128})
    big = HybridHistogram(break_even_s=600, min_samples=3, memory_mb={"f": 4096})
    gaps = [8 * MIN] * 3 + [40 * MIN] * 3  # half short, half long
    for policy in (small, big):
        feed(policy, gaps)

    def covers(decision: Decision, idle_s: float) -> bool:
        return decision.keep_until >= idle_s or (
            decision.prewarm_at is not None
            and decision.prewarm_until is not None
            and decision.prewarm_at <= idle_s <= decision.prewarm_until
        )

    # The small function is worth having warm for the short gaps; the big one is not.
    assert covers(small.on_idle("f", 0), 8 * MIN)
    assert not covers(big.on_idle("f", 0), 8 * MIN)


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("fixed:10m", "fixed:600s"),
        ("fixed:90", "fixed:90s"),
        ("fixed:1h", "fixed:3600s"),
        ("histogram", "histogram"),
        ("histogram-cost:40m", "histogram-cost:2400s"),
        ("histogram-cost", "histogram-cost:7200s"),
    ],
)
def test_parse_policy(spec: str, name: str) -> None:
    assert parse_policy(spec).name == name


@pytest.mark.parametrize("spec", ["lru", "fixed:soon", "fixed:-1m", "histogram:3"])
def test_parse_policy_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match=spec):
        parse_policy(spec)


def test_the_live_router_runs_the_policy_each_function_has() -> None:
    from scheduler.policy import FunctionPolicy, cost_histogram
    from scheduler.router import PolicyRouter

    router = PolicyRouter(FunctionPolicy(prewarm="fixed", keep_alive_s=600))
    router.overrides["costly"] = FunctionPolicy(prewarm="histogram-cost", keep_alive_s=600)
    router.note_memory("costly", 2048)
    twin = cost_histogram()
    twin.memory_mb["costly"] = 2048
    now = 0.0
    for gap_s in [300.0] * 8:  # a call every 5 minutes, 1 s each
        for policy in (router, twin):
            policy.on_arrival("costly", now)
            policy.on_arrival("plain", now)
        expected = twin.decide("costly", now + 1, 600)
        assert router.on_idle("costly", now + 1) == expected
        assert router.on_idle("plain", now + 1) == Decision(keep_until=now + 601)
        now += gap_s
    assert expected.keep_until < now - 300 + 1 + 600  # it did not fall back to the keep-alive


def test_adaptive_prewarms_for_the_next_firing_of_a_timer_between_other_calls() -> None:
    # An hourly timer (minute 0) and one other call at a different minute of each hour: the
    # idle times after the other call vary, so the histogram alone cannot time the next
    # firing; the minutes of the calls can (scheduler.timers).
    from scheduler.policy import adaptive_histogram, cost_histogram

    adaptive, plain = adaptive_histogram(), cost_histogram(1800, 300)
    assert (adaptive.name, plain.name) == ("adaptive", "histogram-cost:1800s/300s")
    last: dict[str, Decision] = {}
    for policy in (adaptive, plain):
        policy.memory_mb["f"] = 2048
        for hour, other in enumerate([14, 26, 38, 22, 46, 10, 34]):
            for minute in (60 * hour, 60 * hour + other):
                policy.on_arrival("f", minute * MIN + 30)
                last[policy.name] = policy.on_idle("f", minute * MIN + 31)
    # Gone idle after the call of minute 394: the timer fires next in minute 420.
    assert last["adaptive"] == Decision(
        keep_until=394 * MIN + 31, prewarm_at=420 * MIN, prewarm_until=421 * MIN
    )
    assert adaptive.timers is not None
    assert adaptive.timers.hit_rate("f") > 0.5
    without = last[plain.name]
    assert without.keep_until < 420 * MIN
    assert not (without.prewarm_at or 0) <= 420 * MIN + 30 <= (without.prewarm_until or 0)


def test_a_function_seen_a_few_times_is_planned_with_the_population_prior() -> None:
    def cost(prior_weight: float) -> HybridHistogram:
        return HybridHistogram(
            break_even_s=600,
            min_samples=1,
            prewarm_margin=1.0,
            keep_margin=1.0,
            prior=((2 * MIN, 1.0), (math.inf, 0.0)),  # the population: gaps under 2 minutes
            prior_weight=prior_weight,
            prior_samples=4,
        )

    alone, pooled = cost(0.0), cost(3.0)
    now = feed(alone, [90 * MIN])  # one gap of 90 minutes seen so far
    assert feed(pooled, [90 * MIN]) == now
    # Alone, one long gap says unload; three gaps of the population under 2 minutes say keep.
    assert alone.on_idle("f", now).keep_until == now
    assert pooled.on_idle("f", now).keep_until == now + 2 * MIN
    # With `prior_samples` gaps of its own, the function is planned on them alone.
    later = feed(alone, [90 * MIN] * 3, start=now)
    assert feed(pooled, [90 * MIN] * 3, start=now) == later
    assert pooled.on_idle("f", later) == alone.on_idle("f", later)


def test_while_planned_on_the_prior_the_keep_alive_bounds_the_keep() -> None:
    policy = HybridHistogram(
        break_even_s=600,
        min_samples=1,
        prior=((2 * MIN, 1.0), (math.inf, 0.0)),
        prior_weight=3.0,
        prior_samples=4,
        prior_bound=3.0,
        prewarm_margin=1.0,
        keep_margin=1.0,
    )
    now = feed(policy, [90 * MIN])
    assert policy.keep_bound("f") == 3.0
    assert policy.decide("f", now, 10.0).keep_until == now + 30  # 2 minutes, bounded at 30 s
    assert policy.decide("f", now, 600.0).keep_until == now + 2 * MIN
    assert policy.decide("other", now, 10.0) == Decision(keep_until=now + 10)  # no idle time yet
    later = feed(policy, [90 * MIN] * 3, start=now)
    assert policy.keep_bound("f") is None  # planned on its own idle times from now on
    assert policy.decide("f", later, 10.0) == policy.decide("f", later, 600.0)


def test_the_prior_is_spread_evenly_over_its_bands() -> None:
    prior = ((2 * MIN, 0.5), (6 * MIN, 0.4), (math.inf, 0.1))
    shares, beyond = prior_shares(prior, bin_s=MIN, range_s=4 * MIN)
    assert shares == pytest.approx([0.25, 0.25, 0.1, 0.1])
    assert beyond == pytest.approx(0.2 + 0.1)  # the part of the second band past the range


def test_adaptive_is_the_cost_plan_with_the_prior_and_timers() -> None:
    adaptive = parse_policy("adaptive")
    assert isinstance(adaptive, HybridHistogram)
    assert adaptive.name == "adaptive"
    assert (adaptive.prior_weight, adaptive.prior, adaptive.prior_bound) == (
        1.0,
        POPULATION_PRIOR,
        3.0,
    )
    assert adaptive.timers is not None
    assert sum(share for _, share in POPULATION_PRIOR) == pytest.approx(1.0)
    assert parse_policy("histogram-cost:30m/5m").name == "histogram-cost:1800s/300s"


def test_adaptive_with_other_prices_for_the_simulators_sweeps() -> None:
    swept = parse_policy("adaptive:45m/4m")
    assert isinstance(swept, HybridHistogram)
    assert (swept.break_even_s, swept.start_cost_s) == (2700.0, 240.0)
    assert swept.prior == POPULATION_PRIOR
    assert swept.timers is not None
    assert swept.name == "histogram-cost:2700s/240s+prior+timers+unseen"
    assert parse_policy("adaptive:30m/4m").name == "adaptive"  # the default's own prices
    with pytest.raises(ValueError, match="adaptive:45m/x"):
        parse_policy("adaptive:45m/x")


def test_idle_times_are_learnt_between_calls_only() -> None:
    # Live, a deploy's import check leaves a ready instance before any call: the time from
    # then to the first call is not a gap between calls (the simulator never sees it).
    deployed, simulated = parse_policy("adaptive"), parse_policy("adaptive")
    assert isinstance(deployed, HybridHistogram)
    assert isinstance(simulated, HybridHistogram)
    deployed.on_idle("f", 0.0)  # the import check's instance, ready at deploy
    for policy in (deployed, simulated):
        policy.on_arrival("f", 50 * MIN)
        assert policy.on_idle("f", 50 * MIN + 1) == Decision(keep_until=50 * MIN + 1 + 600)
    assert deployed._functions["f"].in_range == simulated._functions["f"].in_range == 0
