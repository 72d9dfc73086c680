"""Replay an invocation trace through a warm-pool policy with a simulated clock.

The model is the one of Shahrad et al. (2020): per function, one instance is loaded or not; a
call that finds it loaded (kept alive or prewarmed) is warm, otherwise cold; calls that overlap a
running one are warm. Idle memory is the function's memory times the time an instance is loaded
but not running, in GB·s. The policy objects are the live scheduler's own (`scheduler.policy`).
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.policy import Decision, Policy

DAY_S = 1440 * 60.0


@dataclass(slots=True)
class FunctionTrace:
    name: str
    arrivals: list[float]
    """Arrival times in seconds from the start of the trace, sorted."""
    duration_s: float
    memory_mb: float


@dataclass(slots=True)
class FunctionResult:
    name: str
    calls: int = 0
    cold: int = 0
    starts: int = 0
    idle_mb_s: float = 0.0
    cold_at: list[float] = field(default_factory=list)
    """The arrival times of the cold calls (`simulate` only; the oracles count)."""

    @property
    def cold_rate(self) -> float:
        return self.cold / self.calls if self.calls else 0.0


@dataclass(slots=True)
class Result:
    policy: str
    functions: list[FunctionResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def calls(self) -> int:
        return sum(f.calls for f in self.functions)

    @property
    def cold(self) -> int:
        return sum(f.cold for f in self.functions)

    @property
    def starts(self) -> int:
        return sum(f.starts for f in self.functions)

    @property
    def idle_gb_s(self) -> float:
        return sum(f.idle_mb_s for f in self.functions) / 1024

    @property
    def cold_rate(self) -> float:
        return self.cold / self.calls if self.calls else 0.0

    def cold_rate_percentiles(
        self, percentiles: Iterable[int] = (50, 75, 90, 99)
    ) -> dict[int, float]:
        """The distribution of per-function cold-start rates."""
        rates = sorted(f.cold_rate for f in self.functions if f.calls)
        return {
            p: rates[min(len(rates) - 1, int(p / 100 * len(rates)))] if rates else 0.0
            for p in percentiles
        }


def load_azure_trace(
    folder: Path,
    *,
    seed: int = 0,
    spread: str = "random",
) -> list[FunctionTrace]:
    """Read the Azure Functions 2019 format (`functions*_inv.csv`, `_run.csv`, `_mem.csv`).

    The trace counts calls per minute; `spread` places them in the minute: "random" (uniformly,
    with `seed`; "uniform" is the same) or "even" (equally spaced, as the reference does).
    """
    if spread not in ("random", "uniform", "even"):
        raise ValueError(f'invalid spread "{spread}": random or even')
    inv = _one(folder, "*_inv.csv")
    with _one(folder, "*_run.csv").open() as f:
        durations_ms = {r["HashFunction"]: float(r["Average"]) for r in csv.DictReader(f)}
    with _one(folder, "*_mem.csv").open() as f:
        memory_mb = {r["HashApp"]: float(r["AverageAllocatedMb"]) for r in csv.DictReader(f)}
    rng = random.Random(seed)
    traces = []
    with inv.open() as f:
        reader = csv.reader(f)
        header = next(reader)
        first_minute = header.index("1") if "1" in header else 3
        for row in reader:
            arrivals: list[float] = []
            for minute, raw in enumerate(row[first_minute:]):
                count = int(raw or 0)
                if spread == "even":
                    arrivals.extend(minute * 60.0 + (i + 0.5) * 60.0 / count for i in range(count))
                else:
                    arrivals.extend(
                        sorted(minute * 60.0 + rng.random() * 60.0 for _ in range(count))
                    )
            traces.append(
                FunctionTrace(
                    name=row[0][:12],
                    arrivals=arrivals,
                    duration_s=durations_ms.get(row[0], 1000.0) / 1000,
                    memory_mb=memory_mb.get(row[1], 256.0),
                )
            )
    return traces


def load_timestamps_csv(
    path: Path,
    *,
    memory_mb: float = 256.0,
    duration_s: float = 0.1,
) -> list[FunctionTrace]:
    """A CSV of `function,timestamp_s` rows (optional `duration_ms`, `memory_mb` columns)."""
    by_name: dict[str, FunctionTrace] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            name = row["function"]
            trace = by_name.get(name)
            if trace is None:
                trace = by_name[name] = FunctionTrace(
                    name,
                    [],
                    float(row.get("duration_ms") or duration_s * 1000) / 1000,
                    float(row.get("memory_mb") or memory_mb),
                )
            trace.arrivals.append(float(row["timestamp_s"]))
    for trace in by_name.values():
        trace.arrivals.sort()
    return list(by_name.values())


def cap_durations(traces: list[FunctionTrace], max_duration_s: float) -> list[FunctionTrace]:
    """The same calls, none longer than `max_duration_s` (the reference simulator: 60 s)."""
    return [
        FunctionTrace(t.name, t.arrivals, min(t.duration_s, max_duration_s), t.memory_mb)
        for t in traces
    ]


def idle_times(trace: FunctionTrace) -> list[float]:
    """The idle times the simulator's single instance sees: from the end of a busy period
    (overlapping calls joined) to the next call, in seconds."""
    gaps: list[float] = []
    busy_until = -math.inf
    for arrival in trace.arrivals:
        if arrival >= busy_until > -math.inf:
            gaps.append(arrival - busy_until)
        busy_until = max(busy_until, arrival + trace.duration_s)
    return gaps


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise FileNotFoundError(
            f"no {pattern} in {folder}: expected the Azure Functions "
            "2019 trace format (see shared/traces/README.md)"
        )
    return found[0]


def simulate(
    traces: list[FunctionTrace],
    policy: Policy,
    *,
    end_s: float | None = None,
    tail: str = "trace-end",
) -> Result:
    """Run every function's calls through `policy`.

    `tail`: after a function's last call, its instance's idle time counts until `end_s` (by
    default the end of the trace: "trace-end"), or for as long as the policy keeps it ("full",
    the reference simulator's convention).
    """
    started = time.perf_counter()
    if tail not in ("trace-end", "full"):
        raise ValueError(f'invalid tail "{tail}": trace-end or full')
    end = (
        math.inf
        if tail == "full"
        else end_s
        if end_s is not None
        else max((t.arrivals[-1] + t.duration_s for t in traces if t.arrivals), default=0.0)
    )
    result = Result(policy.name)
    sizes = getattr(policy, "memory_mb", None)
    if isinstance(sizes, dict):  # policies that weigh memory learn each function's size
        sizes.update({t.name: t.memory_mb for t in traces})
    for trace in traces:
        result.functions.append(_simulate_function(trace, policy, end))
    result.elapsed_s = time.perf_counter() - started
    return result


def _idle(decision: Decision, idle_start: float, stop: float) -> tuple[float, int, bool]:
    """An instance idle from `idle_start` under `decision` until a call at `stop` (or the end
    of the simulation): (seconds loaded while idle, prewarm starts, whether the call is warm)."""
    kept = max(0.0, min(stop, decision.keep_until) - idle_start)
    if stop <= decision.keep_until:
        return kept, 0, True
    at = decision.prewarm_at
    if at is None or at >= stop:
        return kept, 0, False
    until = decision.prewarm_until if decision.prewarm_until is not None else at
    loaded_from = max(at, idle_start)
    if stop <= until:  # the prewarmed instance takes the call
        return kept + stop - loaded_from, 1, True
    return kept + max(0.0, until - loaded_from), 1, False  # prewarmed, then let go


def _simulate_function(trace: FunctionTrace, policy: Policy, end: float) -> FunctionResult:
    """One instance per function, as in Shahrad et al.: a call that arrives while it runs
    another joins it (warm) and moves the end of its busy time; the policy decides when the
    instance goes idle, after the last of the overlapping calls, as `Pool.release` does live."""
    out = FunctionResult(trace.name)
    name, mb, duration = trace.name, trace.memory_mb, trace.duration_s
    busy_until = -math.inf
    for arrival in trace.arrivals:
        out.calls += 1
        if arrival < busy_until:  # joins the running instance
            policy.on_arrival(name, arrival)
            busy_until = max(busy_until, arrival + duration)
            continue
        warm = False
        if busy_until > -math.inf:
            kept, prewarms, warm = _idle(policy.on_idle(name, busy_until), busy_until, arrival)
            out.idle_mb_s += kept * mb
            out.starts += prewarms
        if not warm:
            out.cold += 1
            out.starts += 1
            out.cold_at.append(arrival)
        policy.on_arrival(name, arrival)
        busy_until = arrival + duration
    if busy_until > -math.inf:  # the idle tail after the last call
        decision = policy.on_idle(name, busy_until)
        if busy_until < end:
            kept, prewarms, _ = _idle(decision, busy_until, end)
            out.idle_mb_s += kept * mb
            out.starts += prewarms
    return out


def oracle(traces: list[FunctionTrace], idle_budget_gb_s: float) -> Result:
    """The lower bound: knowing every next arrival, keep warm across the cheapest idle gaps
    (each one covered saves one cold start) within the given idle-memory budget."""
    started = time.perf_counter()
    result = Result(f"oracle@{idle_budget_gb_s:,.0f}GB·s")
    gaps: list[tuple[float, int]] = []
    for index, trace in enumerate(traces):
        out = FunctionResult(trace.name, calls=len(trace.arrivals))
        busy_until = -math.inf
        for arrival in trace.arrivals:
            if arrival >= busy_until:
                out.cold += 1
                out.starts += 1
                if busy_until > -math.inf:
                    gaps.append(((arrival - busy_until) * trace.memory_mb, index))
            busy_until = max(busy_until, arrival + trace.duration_s)
        result.functions.append(out)
    budget_mb_s = idle_budget_gb_s * 1024
    for cost_mb_s, index in sorted(gaps):
        if cost_mb_s > budget_mb_s:
            break
        budget_mb_s -= cost_mb_s
        out = result.functions[index]
        out.cold -= 1
        out.starts -= 1
        out.idle_mb_s += cost_mb_s
    result.elapsed_s = time.perf_counter() - started
    return result


def prewarm_oracle(traces: list[FunctionTrace], idle_budget_gb_s: float, lead_s: float) -> Result:
    """The bound for a policy that may also prewarm: knowing every next arrival, an instance
    is loaded `lead_s` before it (0: just in time; 60: within the minute, the resolution of
    the trace's counts), at one instance start, or kept across the gap when that is cheaper.
    Gaps are covered cheapest first within the idle-memory budget (fewest cold starts); what
    the budget leaves turns prewarms into kept instances, the cheapest first (fewer starts)."""
    started = time.perf_counter()
    result = Result(f"oracle+prewarm {lead_s:g}s@{idle_budget_gb_s:,.0f}GB·s")
    gaps: list[tuple[float, float, int]] = []  # (prewarm cost, keep cost) in MB·s, function
    for index, trace in enumerate(traces):
        out = FunctionResult(trace.name, calls=len(trace.arrivals))
        busy_until = -math.inf
        for arrival in trace.arrivals:
            if arrival >= busy_until:
                out.cold += 1
                out.starts += 1
                if busy_until > -math.inf:
                    gap_s = arrival - busy_until
                    gaps.append(
                        (min(gap_s, lead_s) * trace.memory_mb, gap_s * trace.memory_mb, index)
                    )
            busy_until = max(busy_until, arrival + trace.duration_s)
        result.functions.append(out)
    budget_mb_s = idle_budget_gb_s * 1024
    prewarmed: list[tuple[float, int]] = []
    for cover_mb_s, keep_mb_s, index in sorted(gaps):
        if cover_mb_s > budget_mb_s:
            break
        budget_mb_s -= cover_mb_s
        out = result.functions[index]
        out.cold -= 1
        out.idle_mb_s += cover_mb_s
        if keep_mb_s <= cover_mb_s:
            out.starts -= 1  # kept across the gap: no start
        else:
            prewarmed.append((keep_mb_s - cover_mb_s, index))
    for extra_mb_s, index in sorted(prewarmed):
        if extra_mb_s > budget_mb_s:
            break
        budget_mb_s -= extra_mb_s
        result.functions[index].starts -= 1
        result.functions[index].idle_mb_s += extra_mb_s
    result.elapsed_s = time.perf_counter() - started
    return result


def compare(
    traces: list[FunctionTrace],
    policies: list[Callable[[], Policy]],
    *,
    tail: str = "trace-end",
) -> list[Result]:
    """Each policy (a fresh object per run), then the oracle at the first policy's idle memory."""
    results = [simulate(traces, make(), tail=tail) for make in policies]
    if results:
        results.append(oracle(traces, results[0].idle_gb_s))
    return results
