"""`python -m bench.policy_signals`: where a half's cold starts come from, and what each
candidate signal could win on it.

For one half of the trace sample (`bench.policies.half`, reference conventions), per function:
calls in the day, memory, and cold starts under fixed:10m, adaptive, the keep-only oracle and
the prewarming oracle (both at 0.9x fixed:10m's idle memory); then adaptive's cold starts after
each function's first call, by kind of function; then the signals:

- **a keep-only policy** (a memory-aware global budget, greedy-dual style, spends idle memory
  where it saves the most cold starts per GB·s, but only by keeping): bounded by the keep-only
  oracle, which knows every gap;
- **rare functions** (hazard-based keeps): the most they could win is all their cold starts
  after the first call;
- **cross-function co-arrival**, learned online: an *onset* of a function is a call after 5
  minutes without one. When B has an onset, every function A with an onset in the `window_s`
  before it (at least 1 s before: a prewarm must come before the call) is credited with one
  co-arrival A -> B. When A has an onset, each B with at least `min_hits` co-arrivals from A,
  at least `min_share` of A's onsets, is prewarmed for `window_s`. Only the past is used. The
  report gives adaptive's cold starts such a prewarm would have turned warm, and the memory the
  prewarms cost at most (window x memory per prewarm); and, as a base rate, how many of
  adaptive's cold starts follow some other function's onset within a minute at all.
"""

from __future__ import annotations

import argparse
import bisect
import math
from collections import defaultdict, deque
from pathlib import Path

from bench.policies import TRACE, half
from scheduler.policy import parse_policy
from scheduler.simulator import (
    FunctionTrace,
    cap_durations,
    load_azure_trace,
    oracle,
    prewarm_oracle,
    simulate,
)

ONSET_GAP_S = 300.0
RULES = ((60.0, 2, 0.5), (60.0, 2, 0.3), (120.0, 2, 0.3), (300.0, 3, 0.5), (300.0, 2, 0.3))
"""(window_s, min_hits, min_share) of the co-arrival rules measured."""


def onsets(traces: list[FunctionTrace]) -> list[tuple[float, str]]:
    """Every function's onsets (a call after `ONSET_GAP_S` without one), in time order."""
    found = []
    for trace in traces:
        previous = -math.inf
        for arrival in trace.arrivals:
            if arrival - previous >= ONSET_GAP_S:
                found.append((arrival, trace.name))
            previous = arrival
    return sorted(found)


def co_arrival_prewarms(
    events: list[tuple[float, str]], window_s: float, min_hits: int, min_share: float
) -> dict[str, list[tuple[float, float]]]:
    """The prewarm windows, per function, of the online co-arrival rule (module docstring)."""
    onset_count: dict[str, int] = defaultdict(int)
    hits: dict[str, dict[str, int]] = defaultdict(dict)  # A -> B -> co-arrivals
    recent: deque[tuple[float, str]] = deque()
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for now, b in events:
        while recent and recent[0][0] < now - window_s:
            recent.popleft()
        credited = set()
        for then, a in recent:
            if a != b and a not in credited and now - then >= 1.0:
                hits[a][b] = hits[a].get(b, 0) + 1
                credited.add(a)
        onset_count[b] += 1
        for other, count in hits[b].items():
            if count >= min_hits and count >= min_share * onset_count[b]:
                windows[other].append((now + 1.0, now + window_s))
        recent.append((now, b))
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy_signals", description=__doc__)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--half", choices=["tune", "held out"], default="tune")
    parser.add_argument("--spread", choices=["even", "random"], default="even")
    args = parser.parse_args()
    every = cap_durations(load_azure_trace(args.trace, spread=args.spread), 60.0)
    traces = [t for t in every if half(t.name) == args.half]
    fixed = simulate(traces, parse_policy("fixed:10m"), tail="full")
    adaptive = simulate(traces, parse_policy("adaptive"), tail="full")
    keep = oracle(traces, fixed.idle_gb_s * 0.9)
    ahead = prewarm_oracle(traces, fixed.idle_gb_s * 0.9, lead_s=60.0)
    rows = sorted(
        zip(
            traces,
            fixed.functions,
            adaptive.functions,
            keep.functions,
            ahead.functions,
            strict=True,
        ),
        key=lambda r: -r[2].cold,
    )
    print(f"{args.half}: {len(traces)} functions, spread {args.spread}")
    print(f"{'function':<14}{'calls':>7}{'MB':>6}{'fixed':>7}{'adapt':>7}{'keep':>6}{'ahead':>6}")
    for t, f, a, k, p in rows:
        print(
            f"{t.name:<14}{len(t.arrivals):>7}{t.memory_mb:>6.0f}{f.cold:>7}{a.cold:>7}"
            f"{k.cold:>6}{p.cold:>6}"
        )
    print(f"{'total':<27}{fixed.cold:>7}{adaptive.cold:>7}{keep.cold:>6}{ahead.cold:>6}")

    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for t, f, a, _, _ in rows:
        calls = len(t.arrivals)
        kind = "rare (<= 15 calls)" if calls <= 15 else "middle (<= 300)" if calls <= 300 else "hot"
        kind += ", >= 2 GB" if t.memory_mb >= 2000 else ", < 2 GB"
        kinds[kind][0] += 1
        kinds[kind][1] += max(0, f.cold - 1)
        kinds[kind][2] += max(0, a.cold - 1)
    print("\ncold starts after the first call: functions / fixed:10m / adaptive")
    for kind, (n, f_cold, a_cold) in sorted(kinds.items()):
        print(f"  {kind:<28}{n:>4}{f_cold:>6}{a_cold:>6}")

    base = fixed.cold
    print(f"\nadaptive: {adaptive.cold / base:.3f}x; the target 0.45x is {0.45 * base:.0f} cold")
    print(f"keep-only bound (oracle at 0.9x memory): {keep.cold / base:.3f}x")
    rare = sum(v[2] for k, v in kinds.items() if k.startswith("rare"))
    print(f"rare functions all warm after their first call: {(adaptive.cold - rare) / base:.3f}x")

    events = onsets(every)
    times = [t for t, _ in events]
    later = [c for a in adaptive.functions for c in a.cold_at[1:]]
    near = 0
    for cold_at, function in ((c, a.name) for a in adaptive.functions for c in a.cold_at[1:]):
        low = bisect.bisect_left(times, cold_at - 60.0)
        high = bisect.bisect_left(times, cold_at - 1.0)
        near += any(f != function for _, f in events[low:high])
    print(
        f"\nco-arrival: {near} of adaptive's {len(later)} later cold starts follow another "
        "function's onset 1-60 s before (the base rate: onsets of the sample are that dense)"
    )
    memory = {t.name: t.memory_mb for t in traces}
    for window_s, min_hits, min_share in RULES:
        windows = co_arrival_prewarms(events, window_s, min_hits, min_share)
        saved = sum(
            any(s <= c <= e for s, e in windows[a.name])
            for a in adaptive.functions
            for c in a.cold_at[1:]
        )
        prewarms = sum(len(windows[n]) for n in memory)
        cost_gb_s = sum(len(windows[n]) * window_s * mb for n, mb in memory.items()) / 1024
        print(
            f"  rule {window_s:g} s, >= {min_hits} hits, >= {min_share:.0%}: {saved} warm, "
            f"{prewarms} prewarms, <= {cost_gb_s / fixed.idle_gb_s:.3f}x fixed:10m's memory"
        )


if __name__ == "__main__":
    main()
