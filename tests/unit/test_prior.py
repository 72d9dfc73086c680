"""The population prior fitted from idle times, and the measurements the split benchmarks and
the signal report rest on, on hand-made traces."""

from __future__ import annotations

import math

import pytest

from bench.policies import with_prior
from bench.policy_signals import co_arrival_prewarms, onsets
from scheduler.policy import FixedKeepAlive, HybridHistogram
from scheduler.prior import PRIOR_BOUNDS_S, fit_prior
from scheduler.simulator import FunctionTrace, idle_times, simulate


def test_a_prior_weighs_each_function_equally() -> None:
    # a: idle 30 s, 30 s and 400 s (2/3 under a minute, 1/3 in 5-10 min); b: one of 5,000 s
    # (1-2 h); c: called once, no idle time, left out. Averaged over a and b.
    prior = dict(fit_prior([[30.0, 30.0, 400.0], [5000.0], []]))
    assert prior[60.0] == pytest.approx(0.333)
    assert prior[600.0] == pytest.approx(0.167)
    assert prior[7200.0] == pytest.approx(0.5)
    assert sum(prior.values()) == pytest.approx(1.0, abs=0.001)
    assert list(prior) == list(PRIOR_BOUNDS_S)


def test_a_gap_beyond_the_last_bound_falls_in_the_last_band() -> None:
    assert dict(fit_prior([[20000.0]]))[math.inf] == 1.0


def test_no_idle_time_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="no idle times"):
        fit_prior([[], []])


def test_idle_times_join_overlapping_calls() -> None:
    # Calls at 0 and 30 s run 60 s each: busy until 90 s; then 100 s (10 s idle, busy until
    # 160 s) and 600 s (440 s idle).
    trace = FunctionTrace("f", [0.0, 30.0, 100.0, 600.0], duration_s=60.0, memory_mb=256)
    assert idle_times(trace) == [10.0, 440.0]


def test_the_simulator_says_which_calls_were_cold() -> None:
    trace = FunctionTrace("f", [0.0, 100.0, 1000.0], duration_s=1.0, memory_mb=1024)
    result = simulate([trace], FixedKeepAlive(300), end_s=2000)
    assert result.functions[0].cold_at == [0.0, 1000.0]


def test_co_arrival_is_learnt_from_the_past_only() -> None:
    # a has onsets at 0, 1000, 2000, 3000 s; b 10 s after the first two. With a 60 s window,
    # 2 co-arrivals and half of a's onsets needed: b is prewarmed from a's third onset on
    # (2 of 3, then 2 of 4), from 1 s after it (a prewarm comes before the call) to 60 s.
    a = FunctionTrace("a", [0.0, 1000.0, 2000.0, 3000.0], duration_s=1.0, memory_mb=256)
    b = FunctionTrace("b", [10.0, 1010.0], duration_s=1.0, memory_mb=256)
    windows = co_arrival_prewarms(onsets([a, b]), window_s=60.0, min_hits=2, min_share=0.5)
    assert windows["b"] == [(2001.0, 2060.0), (3001.0, 3060.0)]
    assert windows["a"] == []  # b never comes before a within the window
    # Onsets: calls after 5 minutes without one; b called again 100 s later has no new onset.
    c = FunctionTrace("c", [0.0, 100.0, 500.0], duration_s=1.0, memory_mb=256)
    assert onsets([c]) == [(0.0, "c"), (500.0, "c")]


def test_the_split_benchmark_plans_on_the_tune_halfs_prior_only() -> None:
    prior = ((60.0, 0.5), (math.inf, 0.5))
    adaptive = with_prior("adaptive", prior)
    assert isinstance(adaptive, HybridHistogram)
    assert adaptive.prior == prior
    assert adaptive.name == "adaptive"
    assert isinstance(with_prior("fixed:10m", prior), FixedKeepAlive)  # no prior to replace
    assert with_prior("histogram-cost:30m/5m", prior).name == "histogram-cost:1800s/300s"
