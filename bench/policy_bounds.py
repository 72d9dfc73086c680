"""`python -m bench.policy_bounds`: what a histogram plan could reach on one day of calls, and
what learning the day costs the online policies.

Issue 16's targets (<= 0.45x fixed:10m's cold starts at <= 0.90x its idle memory with <= 2x its
instance starts) are asked of every half of the trace sample. Two measurements say how far one
day of calls lets a policy of the histogram family go (reference conventions: calls spread
evenly in each minute, durations capped at 60 s, the tail keep-alive charged in full):

- **the hindsight plan** (`HindsightPlans`): each function plays, after every call, the one
  keep-then-prewarm plan that is cheapest over *its whole day's* idle times (the cost plan of
  `scheduler.windows`, with the day known in advance: nothing to learn, no prior). Swept over
  prices (break-even x start cost, memory-weighted as `histogram-cost`), and for each half the
  price that gives the fewest cold starts within the memory and start targets, chosen on that
  very half: what the family could do knowing each function's day, against what the online
  policies do from the idle times seen so far (not a strict bound: the plan prices idle times
  at their bins' middles, and timer prediction is not in it).
- **the steady state**: each function's day replayed twice in a row; the second day's figures
  (the first day's subtracted) are what the online policies do once they have learnt a day,
  against what they do on the first (the one the targets judge).

Run by `make bench-policies`; docs/policies.md quotes it.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.policies import BEFORE, TARGETS, TRACE, half, make_policy
from scheduler.policy import Decision, Policy, parse_policy
from scheduler.simulator import (
    DAY_S,
    FunctionResult,
    FunctionTrace,
    cap_durations,
    idle_times,
    load_azure_trace,
    simulate,
)
from scheduler.windows import cheapest_plan

BREAK_EVENS_S = (600, 750, 900, 1050, 1200, 1350, 1500, 1650, 1800, 2100, 2400, 2700, 3600)
START_COSTS_S = (60, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800)
BIN_S = 60.0
RANGE_S = 4 * 3600.0
REFERENCE_MB = 1024.0
"""As `scheduler.policy.cost_histogram`: 1-minute bins up to 4 hours, prices for 1 GB."""


@dataclass(slots=True)
class HindsightPlans:
    """Per function, the cheapest (keep, start, end) plan over all its idle times of the day,
    played after every call (see the module's docstring)."""

    traces: list[FunctionTrace]
    break_even_s: float
    start_cost_s: float
    plans: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for trace in self.traces:
            self.plans[trace.name] = day_plan(
                idle_times(trace), trace.memory_mb, self.break_even_s, self.start_cost_s
            )

    @property
    def name(self) -> str:
        return f"hindsight:{self.break_even_s:g}s/{self.start_cost_s:g}s"

    def on_arrival(self, function: str, now: float) -> None:
        pass

    def on_idle(self, function: str, now: float) -> Decision:
        keep, start, end = self.plans[function]
        if start <= keep:
            return Decision(now + max(keep, end))
        return Decision(now + keep, now + start, now + end)


def day_plan(
    gaps: Iterable[float], memory_mb: float, break_even_s: float, start_cost_s: float
) -> tuple[float, float, float]:
    """The cheapest plan over `gaps` (seconds), priced for `memory_mb` as `histogram-cost`."""
    counts: dict[int, int] = {}
    beyond = 0
    for gap in gaps:
        if gap < RANGE_S:
            counts[int(gap // BIN_S)] = counts.get(int(gap // BIN_S), 0) + 1
        else:
            beyond += 1
    scale = REFERENCE_MB / memory_mb
    return cheapest_plan(
        sorted(counts.items()),
        beyond,
        bin_s=BIN_S,
        break_even_s=break_even_s * scale,
        start_cost_s=start_cost_s * scale,
    )


Figures = tuple[float, float, float]
"""(cold starts, idle MB·s, instance starts) of a set of functions."""


def figures(results: Iterable[FunctionResult]) -> Figures:
    cold = idle = starts = 0.0
    for r in results:
        cold, idle, starts = cold + r.cold, idle + r.idle_mb_s, starts + r.starts
    return cold, idle, starts


def ratios(run: Figures, base: Figures) -> Figures:
    return tuple(x / b if b else math.inf for x, b in zip(run, base, strict=True))  # type: ignore[return-value]


def meets(r: Figures) -> bool:
    return all(x <= t for x, t in zip(r, TARGETS, strict=True))


def best_price(
    runs: dict[tuple[int, int], dict[str, FunctionResult]],
    base: dict[str, FunctionResult],
    names: set[str],
) -> tuple[tuple[int, int], Figures] | None:
    """The price whose hindsight plans give `names` the fewest cold starts within the memory
    and start targets, and its ratios against fixed:10m; None when no price keeps within."""
    found = None
    reference = figures(base[n] for n in names)
    for price, by_name in runs.items():
        r = ratios(figures(by_name[n] for n in names), reference)
        if r[1] <= TARGETS[1] and r[2] <= TARGETS[2] and (found is None or r[0] < found[1][0]):
            found = (price, r)
    return found


def two_days(traces: list[FunctionTrace]) -> list[FunctionTrace]:
    """Each function's day, then the same calls again the next day."""
    return [
        FunctionTrace(
            t.name, t.arrivals + [a + DAY_S for a in t.arrivals], t.duration_s, t.memory_mb
        )
        for t in traces
    ]


def by_name(results: Iterable[FunctionResult]) -> dict[str, FunctionResult]:
    return {r.name: r for r in results}


def second_day(
    traces: list[FunctionTrace], make: Callable[[], Policy]
) -> tuple[dict[str, FunctionResult], dict[str, FunctionResult]]:
    """(first day, second day) per function. The first is the day alone, its idle tail after
    the last call charged in full (as the targets are judged). The second is a day in the
    steady state: the idle times its own calls end (from the first day's last call to its
    first, then between its calls), its tail left to the day after; the two days' run less the
    first day's calls and idle times, both without a tail (so the tails, which differ once a
    policy has learnt, cancel nowhere)."""
    first = by_name(simulate(traces, make(), tail="full").functions)
    untailed = by_name(simulate(traces, make(), end_s=0.0).functions)  # no tail charged
    both = by_name(simulate(two_days(traces), make(), end_s=0.0).functions)
    second = {
        name: FunctionResult(
            name,
            calls=both[name].calls - r.calls,
            cold=both[name].cold - r.cold,
            starts=both[name].starts - r.starts,
            idle_mb_s=both[name].idle_mb_s - r.idle_mb_s,
        )
        for name, r in untailed.items()
    }
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy_bounds", description=__doc__)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--splits", type=int, default=20, metavar="N")
    args = parser.parse_args()
    traces = cap_durations(load_azure_trace(args.trace, spread="even"), 60.0)
    names = {t.name for t in traces}
    halves = {
        "tune": {n for n in names if half(n) == "tune"},
        "held out": {n for n in names if half(n) == "held out"},
    }
    base = by_name(simulate(traces, parse_policy("fixed:10m"), tail="full").functions)
    adaptive = by_name(simulate(traces, parse_policy("adaptive"), tail="full").functions)
    runs = {
        (be, sc): by_name(simulate(traces, HindsightPlans(traces, be, sc), tail="full").functions)
        for be in BREAK_EVENS_S
        for sc in START_COSTS_S
    }

    print("Hindsight plans (each function's cheapest plan over its whole day), the best price")
    print("per half within <= 0.90x idle memory and <= 2x instance starts; adaptive (online)")
    print(f"{'half':<10}{'price':>12}{'cold':>8}{'memory':>8}{'starts':>8}   adaptive")
    for label, group in [("all", names), *halves.items()]:
        found = best_price(runs, base, group)
        online = ratios(figures(adaptive[n] for n in group), figures(base[n] for n in group))
        price = "none" if found is None else f"{found[0][0] / 60:g}m/{found[0][1] / 60:.2g}m"
        r = (math.nan,) * 3 if found is None else found[1]
        print(
            f"{label:<10}{price:>12}{r[0]:>7.3f}x{r[1]:>7.3f}x{r[2]:>7.2f}x"
            f"   {online[0]:.3f}x / {online[1]:.3f}x / {online[2]:.2f}x"
        )

    met_bound = met_online = 0
    ordered = sorted(names)
    for seed in range(args.splits):
        chosen = set(random.Random(seed).sample(ordered, len(ordered) // 2))
        for group in (chosen, names - chosen):
            found = best_price(runs, base, group)
            met_bound += found is not None and meets(found[1])
            reference = figures(base[n] for n in group)
            met_online += meets(ratios(figures(adaptive[n] for n in group), reference))
    print(
        f"\n{2 * args.splits} halves of {args.splits} random splits meeting all three targets:"
        f" hindsight plans (price chosen per half) {met_bound}, adaptive (online, the shipped"
        f" prior) {met_online}"
    )

    print("\nFirst day against the second (the same calls again, after a day learnt)")
    print(f"{'policy':<24}{'half':<10}{'first day':>26}{'second day':>26}")
    days = {spec: second_day(traces, partial(make_policy, spec)) for spec in SPECS}
    for spec in SPECS[1:]:
        for label, group in [("all", names), *halves.items()]:
            cells = []
            for day in (0, 1):
                reference = figures(days["fixed:10m"][day][n] for n in group)
                r = ratios(figures(days[spec][day][n] for n in group), reference)
                cells.append(f"{r[0]:.3f}x/{r[1]:.3f}x/{r[2]:.2f}x")
            print(f"{spec:<24}{label:<10}{cells[0]:>26}{cells[1]:>26}")


SPECS = ("fixed:10m", "histogram-cost:30m/5m", BEFORE, "adaptive")


if __name__ == "__main__":
    main()
