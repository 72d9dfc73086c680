"""The hindsight bound and the second-day replay of bench/policy_bounds.py, on hand-made days."""

from bench.policy_bounds import HindsightPlans, best_price, by_name, second_day
from scheduler.policy import parse_policy
from scheduler.simulator import FunctionResult, FunctionTrace, simulate


def every_20_minutes(calls: int = 13) -> FunctionTrace:
    return FunctionTrace("timer", [i * 1200.0 for i in range(calls)], 1.0, 1024.0)


def test_hindsight_plan_prewarms_a_regular_gap_for_its_last_minute() -> None:
    trace = every_20_minutes()
    # Idle 1,199 s between calls: keeping costs 1,199 s, a cold start 30 + 5 minutes, a load in
    # the gap's minute (19-20 min) 59 s + the 5-minute start: the plan prewarms.
    policy = HindsightPlans([trace], break_even_s=1800.0, start_cost_s=300.0)
    assert policy.plans["timer"] == (0.0, 1140.0, 1200.0)
    result = simulate([trace], policy, tail="full").functions[0]
    assert result.cold == 1  # the first call only
    assert result.starts == 1 + 12 + 1  # the first call, 12 prewarms, the one after the last call
    assert result.idle_mb_s == (12 * 59.0 + 60.0) * 1024.0


def test_hindsight_plan_keeps_what_is_cheaper_to_keep() -> None:
    trace = FunctionTrace("busy", [i * 30.0 for i in range(50)], 1.0, 1024.0)
    keep, start, _ = HindsightPlans([trace], 1800.0, 300.0).plans["busy"]
    assert keep == 60.0  # every 29 s gap is in the first minute: keep it
    assert start <= keep
    assert simulate([trace], HindsightPlans([trace], 1800.0, 300.0)).functions[0].cold == 1


def test_second_day_is_two_days_less_the_first() -> None:
    trace = every_20_minutes()
    first, second = second_day([trace], lambda: parse_policy("fixed:10m"))
    # A fixed keep-alive learns nothing: the second day is the first again (its first call
    # comes hours after the first day's last).
    assert (second["timer"].cold, second["timer"].starts) == (13, 13)
    assert second["timer"].idle_mb_s == first["timer"].idle_mb_s == 13 * 600.0 * 1024.0
    learnt_first, learnt_second = second_day([trace], lambda: parse_policy("histogram-cost:30m/5m"))
    assert learnt_second["timer"].cold < learnt_first["timer"].cold


def test_best_price_is_the_fewest_cold_starts_within_memory_and_starts() -> None:
    base = {"f": FunctionResult("f", calls=100, cold=10, starts=10, idle_mb_s=1000.0)}
    runs = {
        (1, 1): by_name([FunctionResult("f", calls=100, cold=2, starts=10, idle_mb_s=950.0)]),
        (2, 2): by_name([FunctionResult("f", calls=100, cold=3, starts=10, idle_mb_s=800.0)]),
        (3, 3): by_name([FunctionResult("f", calls=100, cold=4, starts=25, idle_mb_s=500.0)]),
        (4, 4): by_name([FunctionResult("f", calls=100, cold=5, starts=12, idle_mb_s=850.0)]),
    }
    found = best_price(runs, base, {"f"})
    assert found is not None
    price, ratios = found
    assert price == (2, 2)
    assert ratios == (0.3, 0.8, 1.0)
    assert best_price({(1, 1): runs[(1, 1)]}, base, {"f"}) is None


def test_second_day_has_the_idle_times_its_calls_end_and_no_tail() -> None:
    # Calls at 0 and 50 s before the second day's first: the first day alone charges its last
    # call's keep-alive (600 s) as its tail; in two days that idle time ends after 49 s, at the
    # second day's first call, and is the second day's, which leaves its own tail to the next.
    trace = FunctionTrace("f", [0.0, 86_350.0], 1.0, 1024.0)
    first, second = second_day([trace], lambda: parse_policy("fixed:10m"))
    assert first["f"].idle_mb_s == (600.0 + 600.0) * 1024.0
    assert second["f"].idle_mb_s == (49.0 + 600.0) * 1024.0
    assert (second["f"].cold, second["f"].calls) == (1, 2)
