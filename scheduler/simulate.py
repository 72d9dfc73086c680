"""`python -m scheduler.simulate` (what `fn policy simulate` runs): compare warm-pool policies
on an invocation trace, with the same policy code the live scheduler runs."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from scheduler.policy import Policy, parse_policy
from scheduler.simulator import (
    FunctionTrace,
    Result,
    cap_durations,
    compare,
    load_azure_trace,
    load_timestamps_csv,
)


def _table(results: list[Result], traces: list[FunctionTrace]) -> str:
    calls = sum(len(t.arrivals) for t in traces)
    lines = [
        f"{len(traces)} functions, {calls:,} calls",
        f"{'policy':<26}{'cold starts':>12}{'cold rate':>11}{'p50 fn':>8}{'p90 fn':>8}"
        f"{'idle GB·s':>14}{'starts':>9}{'time':>8}",
    ]
    for r in results:
        pct = r.cold_rate_percentiles((50, 90))
        lines.append(
            f"{r.policy:<26}{r.cold:>12,}{r.cold_rate:>11.4%}{pct[50]:>8.1%}"
            f"{pct[90]:>8.1%}{r.idle_gb_s:>14,.0f}{r.starts:>9,}{r.elapsed_s:>7.1f}s"
        )
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    """Cold-start rate against idle memory: lower-left is better; the oracle bounds it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in results:
        oracle = r.policy.startswith("oracle")
        ax.scatter(
            r.idle_gb_s / 1e6,
            r.cold_rate * 100,
            s=60,
            marker="*" if oracle else "o",
            color="black" if oracle else None,
        )
        ax.annotate(
            r.policy,
            (r.idle_gb_s / 1e6, r.cold_rate * 100),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    ax.set_xlabel("idle memory (million GB·s)")
    ax.set_ylabel("cold starts (% of calls)")
    ax.set_title("Warm-pool policies: cold starts against idle memory")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fn policy simulate", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", type=Path, help="a folder in the Azure Functions 2019 format")
    source.add_argument("--csv", type=Path, help="a CSV of function,timestamp_s rows")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        help="fixed:DURATION, histogram, histogram-cost[:BREAK_EVEN[/START_COST]] or "
        "adaptive[:BREAK_EVEN/START_COST] (repeatable; default: fixed:10m and histogram); "
        "the oracle is added at the first one's idle memory",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for spreading each minute's calls (default 0)"
    )
    parser.add_argument(
        "--spread",
        choices=("random", "uniform", "even"),
        default="random",
        help="place a minute's calls uniformly at random (random, or uniform) or evenly "
        "(the reference simulator)",
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        metavar="SECONDS",
        help="cap each call's duration (the reference simulator: 60)",
    )
    parser.add_argument(
        "--tail",
        choices=("trace-end", "full"),
        default="trace-end",
        help="after a function's last call, count its idle memory until the end of the trace "
        "(trace-end) or as long as the policy keeps it (full: the reference simulator)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="draw cold-start rate against idle memory, one point per policy",
    )
    args = parser.parse_args(argv)
    specs = args.policy or ["fixed:10m", "histogram"]
    makers: list[Callable[[], Policy]] = []
    try:
        for spec in specs:
            parse_policy(spec)
            makers.append(functools.partial(parse_policy, spec))
        traces = (
            load_azure_trace(args.trace, seed=args.seed, spread=args.spread)
            if args.trace
            else load_timestamps_csv(args.csv)
        )
        if args.max_duration is not None:
            if args.max_duration <= 0:
                raise ValueError(f"--max-duration must be above 0, not {args.max_duration:g}")
            traces = cap_durations(traces, args.max_duration)
    except (ValueError, OSError, KeyError) as exc:
        print(f"fn policy simulate: {exc}", file=sys.stderr)
        return 2
    results = compare(traces, makers, tail=args.tail)
    if args.plot:
        try:
            plot(results, args.plot)
        except ImportError:
            print(
                "fn policy simulate: --plot needs matplotlib: pip install matplotlib",
                file=sys.stderr,
            )
            return 2
    if args.json:
        sys.stdout.write(
            orjson.dumps(
                [
                    {
                        "policy": r.policy,
                        "calls": r.calls,
                        "cold": r.cold,
                        "cold_rate": r.cold_rate,
                        "cold_rate_by_function": r.cold_rate_percentiles(),
                        "idle_gb_s": r.idle_gb_s,
                        "starts": r.starts,
                        "elapsed_s": r.elapsed_s,
                    }
                    for r in results
                ],
                option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
            ).decode()
            + "\n"
        )
    else:
        print(_table(results, traces))
        print(
            f"(calls placed within each minute: {args.spread}"
            f"{f', seed {args.seed}' if args.spread != 'even' else ''}; durations capped at "
            f"{'none' if args.max_duration is None else f'{args.max_duration:g} s'}; "
            f"idle tail: {args.tail})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
