"""`python -m bench.decisions`: the time of one policy decision per call, at 240 filled bins.

A function whose idle times fill every 1-minute bin of the 4-hour histogram (the worst case of
the cost plan), called over and over; then one whose idle times fall in 5 bins spread over it
(where `adaptive` plans on the empty stretches between them too: `with_unseen`). Per call
this times what runs on the call path (the arrival and the decision when the instance goes
idle: `on_arrival` + `on_idle`) and, apart, the plan's recomputation that runs off it
(deferred, as the live scheduler does with `call_soon`; once per 1 % of growth of the
histogram). Target (issue 16): p99 of the decision under 0.1 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from scheduler.policy import Policy, parse_policy


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(
    spec: str, calls: int, seed: int, filled: int = 240
) -> tuple[list[float], list[float], int]:
    """(decision times, recomputation times, filled bins), in seconds."""
    deferred: list[Callable[[], None]] = []
    policy: Policy = parse_policy(spec)
    for histogram in getattr(policy, "histograms", {}).values():
        histogram.defer = deferred.append
    if hasattr(policy, "defer"):
        policy.defer = deferred.append
    rng = random.Random(seed)
    now = 0.0
    # `filled` bins spread over the range (all 240 by default), 480 idle times in all
    chosen = [b * 240 // filled for b in range(filled)]
    fill = [b * 60.0 + 30.0 for b in chosen] * (480 // filled)
    for idle_s in fill:
        policy.on_arrival("f", now)
        policy.on_idle("f", now + 0.1)
        now += 0.1 + idle_s
    for job in deferred:
        job()
    deferred.clear()
    decisions: list[float] = []
    recomputations: list[float] = []
    for _ in range(calls):
        idle_s = rng.choice(fill) + rng.uniform(-20, 20)
        started = time.perf_counter()
        policy.on_arrival("f", now)
        arrival_s = time.perf_counter() - started
        for job in deferred:  # live: on the event loop while the call runs
            started = time.perf_counter()
            job()
            recomputations.append(time.perf_counter() - started)
        deferred.clear()
        started = time.perf_counter()
        policy.on_idle("f", now + 0.1)
        decisions.append(arrival_s + time.perf_counter() - started)
        now += 0.1 + idle_s
    return decisions, recomputations, sum(1 for c in _bins(policy) if c)


def _bins(policy: Policy) -> list[int]:
    for histogram in [policy, *getattr(policy, "histograms", {}).values()]:
        state = getattr(histogram, "_functions", {}).get("f")
        if state is not None:
            return list(state.bins)
    return []


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decisions", description=__doc__)
    parser.add_argument("--policy", action="append", default=[])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--filled",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="bins of the histogram filled, spread over its range (default: 240, then 5)",
    )
    args = parser.parse_args()
    specs = args.policy or ["adaptive", "histogram-cost:2h", "histogram", "fixed:10m"]
    print(
        f"{'policy':<22}{'bins':>6}{'decision p50':>14}{'p99':>10}{'max':>10}"
        f"{'recompute p50':>15}{'p99':>10}{'runs':>7}"
    )
    for spec, wanted in [(s, n) for n in args.filled or [240, 5] for s in specs]:
        decisions, recomputations, filled = run(spec, args.calls, args.seed, wanted)
        us = [d * 1e6 for d in decisions]
        rs = [r * 1e6 for r in recomputations] or [0.0]
        print(
            f"{spec:<22}{filled:>6}{statistics.median(us):>12.1f}us{percentile(us, 99):>8.1f}us"
            f"{max(us):>8.1f}us{statistics.median(rs):>13.1f}us{percentile(rs, 99):>8.1f}us"
            f"{len(recomputations):>7}"
        )


if __name__ == "__main__":
    main()
