"""`python -m bench.policies`: warm-pool policies on the two halves of the trace sample.

The functions are split in two by a hash of their name (`half`), so a policy's parameters can
be chosen on one half ("tune") and judged on the other ("held out"), as the issue's judges do
on functions we do not have. Reference conventions of the simulator: calls spread evenly in each
minute, durations capped at 60 s, the keep-alive after the last call charged in full. Each row
is compared with fixed:10m on the same half (`--spread random` places the calls at random
within each minute instead): cold starts, idle memory (GB·s), instance starts,
the 75th percentile of the functions' cold-start rates, and the time the simulation took.

`--splits N` judges the same policies on N random 50/50 splits instead (seeds 0..N-1, or from
`--first-seed`; `--policy adaptive:45m/4m` tries other prices for adaptive): on
each, the population prior is fitted on the split's tune half only (`fit_prior`), and the
ratios of both halves are reported as distributions (median and worst), with how many
halves go over each of issue 16's targets and how many meet all three.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
from pathlib import Path

from scheduler.policy import HybridHistogram, Policy, adaptive_histogram, parse_policy
from scheduler.prior import fit_prior
from scheduler.simulator import (
    FunctionTrace,
    Result,
    cap_durations,
    idle_times,
    load_azure_trace,
    oracle,
    prewarm_oracle,
    simulate,
)

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure-functions-2019-sample"
POLICIES = [
    "fixed:10m",
    "histogram",
    "histogram-cost:2h",
    "histogram-cost:30m/5m",  # the cost plan alone, at adaptive's former prices
    "adaptive-before",
    "adaptive",
]
BEFORE = "adaptive-before"
"""The default until 2026-12-01 (bench only): adaptive at 30m/5m without the unseen idle
times (`scheduler.windows.with_unseen`)."""


def make_policy(spec: str) -> Policy:
    """`parse_policy`, and `adaptive-before` (`BEFORE`)."""
    if spec != BEFORE:
        return parse_policy(spec)
    policy = adaptive_histogram()
    policy.start_cost_s, policy.unseen = 300.0, False
    return policy


def half(name: str) -> str:
    """ "tune" or "held out", from a hash of the function's name: stable, and blind to what
    the function does."""
    return "tune" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "held out"


def row(r: Result, base: Result) -> str:
    return (
        f"{r.policy:<30}{r.cold:>7,}{r.cold / base.cold:>7.3f}x{r.idle_gb_s / 1e6:>9.3f}M"
        f"{r.idle_gb_s / base.idle_gb_s:>7.3f}x{r.starts:>8,}{r.starts / base.starts:>7.2f}x"
        f"{r.cold_rate_percentiles((75,))[75]:>8.1%}{r.elapsed_s:>7.2f}s"
    )


def report(name: str, traces: list[FunctionTrace], specs: list[str]) -> None:
    results = [named(simulate(traces, make_policy(spec), tail="full"), spec) for spec in specs]
    base = results[0]
    calls = sum(len(t.arrivals) for t in traces)
    print(f"\n{name}: {len(traces)} functions, {calls:,} calls")
    print(
        f"{'policy':<30}{'cold':>7}{'':>8}{'idle GB·s':>10}{'':>8}{'starts':>8}{'':>8}"
        f"{'p75 fn':>8}{'time':>8}"
    )
    for r in results:
        print(row(r, base))
    print(row(oracle(traces, base.idle_gb_s * 0.9), base))
    print(row(prewarm_oracle(traces, base.idle_gb_s * 0.9, lead_s=60.0), base))


TARGETS = (0.45, 0.90, 2.0)
"""Issue 16: cold starts, idle memory and instance starts, each against fixed:10m."""


def named(result: Result, spec: str) -> Result:
    """`result`, shown as `adaptive-before` when it is (its policy has no name of its own)."""
    if spec == BEFORE:
        result.policy = BEFORE
    return result


def with_prior(spec: str, prior: tuple[tuple[float, float], ...]) -> Policy:
    """The policy of `spec`, planned on `prior` if it uses a population prior."""
    policy = make_policy(spec)
    if isinstance(policy, HybridHistogram) and policy.prior:
        policy.prior = prior
    return policy


def ratios(r: Result, base: Result) -> tuple[float, float, float, float]:
    """(cold, idle memory, starts) against `base`, and the p75 per-function cold-start rate."""
    p75 = r.cold_rate_percentiles((75,))[75]
    return r.cold / base.cold, r.idle_gb_s / base.idle_gb_s, r.starts / base.starts, p75


def split_report(
    traces: list[FunctionTrace], specs: list[str], splits: int, first_seed: int = 0
) -> None:
    """Each policy on `splits` random 50/50 splits (seeds from `first_seed`), the prior fitted
    on each tune half."""
    names = sorted(t.name for t in traces)
    found: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for seed in range(first_seed, first_seed + splits):
        chosen = set(random.Random(seed).sample(names, len(names) // 2))
        tune = [t for t in traces if t.name in chosen]
        held_out = [t for t in traces if t.name not in chosen]
        prior = fit_prior(idle_times(t) for t in tune)
        for part, functions in (("tune", tune), ("held out", held_out)):
            results = [
                named(simulate(functions, with_prior(s, prior), tail="full"), s) for s in specs
            ]
            base = results[0]
            results.append(oracle(functions, base.idle_gb_s * 0.9))
            results.append(prewarm_oracle(functions, base.idle_gb_s * 0.9, lead_s=60.0))
            for r in results[1:]:
                name = r.policy.split("@")[0]
                found.setdefault((part, name), []).append(ratios(r, base))
    print(f"\n{splits} random 50/50 splits (prior fitted on each tune half); against fixed:10m")
    print(
        f"{'half':<9}{'policy':<40}{'cold med':>9}{'worst':>7}{'mem med':>8}{'worst':>7}"
        f"{'starts med':>11}{'worst':>7}{'p75 fn':>8}{'over':>14}{'met':>7}"
    )
    for (part, name), values in found.items():
        cold, memory, starts, p75 = (sorted(v) for v in zip(*values, strict=True))
        met = sum(all(x <= t for x, t in zip(v, TARGETS, strict=False)) for v in values)
        over = [sum(v[i] > t for v in values) for i, t in enumerate(TARGETS)]
        print(
            f"{part:<9}{name:<40}{statistics.median(cold):>8.3f}x{cold[-1]:>6.3f}x"
            f"{statistics.median(memory):>7.3f}x{memory[-1]:>6.3f}x"
            f"{statistics.median(starts):>10.2f}x{starts[-1]:>6.2f}x"
            f"{statistics.median(p75):>8.1%}{'/'.join(map(str, over)):>14}{met:>4}/{len(values)}"
        )
    print("over: the halves over each target (cold starts / idle memory / instance starts)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        help="a policy spec as `fn policy simulate` takes, or adaptive-before (the default "
        "until 2026-12-01); repeatable",
    )
    parser.add_argument("--half", choices=["tune", "held out", "both"], default="both")
    parser.add_argument(
        "--spread",
        choices=["even", "random"],
        default="even",
        help="place each minute's calls evenly (the reference) or at random (seed 0)",
    )
    parser.add_argument(
        "--splits",
        type=int,
        default=0,
        metavar="N",
        help="judge on N random 50/50 splits (the prior fitted per tune half) instead",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="S",
        help="the splits' seeds are S to S+N-1 (fresh splits to check a choice made on others)",
    )
    args = parser.parse_args()
    specs = ["fixed:10m", *(args.policy or POLICIES[1:])]
    traces = cap_durations(load_azure_trace(args.trace, spread=args.spread), 60.0)
    if args.splits:
        split_report(traces, specs, args.splits, args.first_seed)
        return
    for name in ("tune", "held out"):
        if args.half in (name, "both"):
            report(name, [t for t in traces if half(t.name) == name], specs)


if __name__ == "__main__":
    main()
