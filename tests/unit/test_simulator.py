"""The trace simulator on small traces whose outcome can be counted by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.policy import FixedKeepAlive, HybridHistogram
from scheduler.simulator import (
    FunctionTrace,
    cap_durations,
    load_azure_trace,
    load_timestamps_csv,
    oracle,
    simulate,
)

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "traces" / "azure-functions-2019-sample"


def test_fixed_keep_alive_cold_starts_and_idle_memory() -> None:
    # Calls at 0, 100, 1000 s; each runs 1 s; 1024 MB; keep-alive 300 s; trace ends at 2000 s.
    trace = FunctionTrace("f", [0.0, 100.0, 1000.0], duration_s=1.0, memory_mb=1024)
    result = simulate([trace], FixedKeepAlive(300), end_s=2000)
    assert (result.calls, result.cold, result.starts) == (3, 2, 2)
    # idle: 99 s (kept across the gap), 300 s (then unloaded), 300 s after the last call.
    assert result.idle_gb_s == pytest.approx(99 + 300 + 300)


def overlapping_then_one_more(start: float = 0.0) -> FunctionTrace:
    """The issue's trace: a call every 30 s for 15 min (31 calls, 0 to 900 s), each running
    60 s, so each overlaps the next and the instance is busy until 960 s; then one call 40 s
    after it went idle (1000 s). 1024 MB: one second warm is 1 GB·s."""
    arrivals = [start + 30.0 * i for i in range(31)] + [start + 1000.0]
    return FunctionTrace("f", arrivals, duration_s=60.0, memory_mb=1024)


def test_fixed_keep_alive_on_overlapping_calls_counts_from_the_last_one() -> None:
    # By hand, fixed:10m: the first call is cold (1 start). The next 30 join the running
    # instance, and it goes idle only at 900 + 60 = 960 s, when the policy is asked: keep it
    # until 1560 s. The call at 1000 s finds it (warm). Idle: 960 -> 1000 s, 40 GB·s; after
    # the last call (busy until 1060 s) a full keep-alive, 600 GB·s (the reference's tail):
    # 640 GB·s. (Asking the policy at the end of the first call only, 60 + 600 = 660 s, made
    # the call at 1000 s cold: 2 cold starts and 600 GB·s.)
    result = simulate([overlapping_then_one_more()], FixedKeepAlive(600), tail="full")
    assert (result.calls, result.cold, result.starts) == (32, 1, 1)
    assert result.idle_gb_s == pytest.approx(640)
    # Counting idle time only until the trace ends (the last call's end, 1060 s): 40 GB·s.
    result = simulate([overlapping_then_one_more()], FixedKeepAlive(600))
    assert result.cold == 1
    assert result.idle_gb_s == pytest.approx(40)


def test_durations_are_capped_like_the_reference() -> None:
    capped = cap_durations([overlapping_then_one_more()], 20.0)
    # 20 s calls 30 s apart no longer overlap: idle 10 s between calls, 80 s before the last.
    result = simulate(capped, FixedKeepAlive(600), tail="full")
    assert result.cold == 1
    assert result.idle_gb_s == pytest.approx(30 * 10 + 80 + 600)


def test_overlapping_calls_are_warm() -> None:
    trace = FunctionTrace("f", [0.0, 0.5, 0.7], duration_s=1.0, memory_mb=1024)
    assert simulate([trace], FixedKeepAlive(0), end_s=2).cold == 1


def test_prewarm_turns_a_regular_call_warm() -> None:
    # Every 30 minutes: after a few samples the histogram prewarms before each call.
    arrivals = [i * 1800.0 for i in range(40)]
    trace = FunctionTrace("f", arrivals, duration_s=1.0, memory_mb=1024)
    histogram = simulate([trace], HybridHistogram())
    fixed = simulate([trace], FixedKeepAlive(600))
    assert fixed.cold == 40
    assert histogram.cold == 1
    # Loaded for the whole gap only while it learns (5 gaps), then ~13% of each gap.
    assert histogram.idle_gb_s < 0.25 * 39 * 1799


def test_oracle_covers_the_cheapest_gaps_within_the_budget() -> None:
    a = FunctionTrace("a", [0.0, 10.0, 1000.0], duration_s=0.0, memory_mb=1024)
    b = FunctionTrace("b", [0.0, 50.0], duration_s=0.0, memory_mb=1024)
    result = oracle([a, b], idle_budget_gb_s=60)  # covers the 10 s and 50 s gaps, not 990 s
    assert result.cold == 3
    assert result.idle_gb_s == pytest.approx(60)


def test_timestamps_csv(tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    path.write_text("function,timestamp_s\nf,5\nf,1\ng,2\n")
    traces = {t.name: t for t in load_timestamps_csv(path)}
    assert traces["f"].arrivals == [1.0, 5.0]
    assert traces["g"].arrivals == [2.0]


@pytest.mark.skipif(not SAMPLE.exists(), reason="the shared trace sample is not checked out")
def test_the_shared_sample_loads_whole() -> None:
    traces = load_azure_trace(SAMPLE)
    assert len(traces) == 100
    assert sum(len(t.arrivals) for t in traces) == 621_128
    even = load_azure_trace(SAMPLE, spread="even")
    assert [len(t.arrivals) for t in even] == [len(t.arrivals) for t in traces]
