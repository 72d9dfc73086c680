"""Warm-pool policies: when an idle instance stops, and when one is loaded ahead of a call.

Pure objects fed with events (a call arrived, an instance went idle) and clock times; they
answer with a `Decision`. The live scheduler and the trace simulator (`scheduler.simulator`) run
the very same code, which is what lets an operator try a policy on a trace before using it.

- `FixedKeepAlive`: keep every idle instance for the same time (OpenWhisk: 10 min; Knative).
- `HybridHistogram`: Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020): per function, a
  histogram of idle times; unload after a call and prewarm just before the next one is likely.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from config.units import duration_text_s
from scheduler.idle_times import IdleTimes, Plan
from scheduler.prior import POPULATION_PRIOR, prior_shares
from scheduler.timers import Plan as Triple
from scheduler.timers import TimerDetector, cover
from scheduler.windows import cheapest_plan, percentile_plan, with_unseen

DEFAULT_KEEP_ALIVE_S = 600.0
"""Idle seconds before an instance stops, unless an operator sets another: 10 min, as
OpenWhisk. The one place this default is written (`fn up --keep-alive`, FN_KEEP_ALIVE)."""


class Decision(NamedTuple):
    """What to do with a function's instance that just went idle at `now`. A named tuple: one
    is made per call, and a frozen dataclass takes twice as long to make."""

    keep_until: float
    """Stop the idle instance at this time (`now`: unload at once)."""
    prewarm_at: float | None = None
    """Load an instance again at this time, ahead of the expected next call."""
    prewarm_until: float | None = None
    """Keep that prewarmed instance until this time if no call comes."""


class Policy(Protocol):
    @property
    def name(self) -> str:
        """How the policy is written on the command line: `fixed:600s`, `histogram`."""
        ...

    def on_arrival(self, function: str, now: float) -> None:
        """A call of `function` arrived at `now`."""
        ...

    def on_idle(self, function: str, now: float) -> Decision:
        """The last busy instance of `function` went idle at `now`: what next?"""
        ...


@dataclass(slots=True)
class FixedKeepAlive:
    """Keep every idle instance for the same time, as OpenWhisk (10 min) and Knative do."""

    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S

    @property
    def name(self) -> str:
        return f"fixed:{self.keep_alive_s:g}s"

    def on_arrival(self, function: str, now: float) -> None:
        pass

    def on_idle(self, function: str, now: float) -> Decision:
        return Decision(keep_until=now + self.keep_alive_s)


@dataclass(slots=True)
class HybridHistogram:
    """The hybrid histogram policy of Shahrad et al. (2020), per function.

    Idle times (end of a call to the start of the next) go into 1-minute bins up to 4 hours.
    When the histogram is representative (enough samples, coefficient of variation of the bin
    counts >= 2), an idle instance is unloaded at once and prewarmed at `prewarm_margin` x the
    5th percentile, then kept until `keep_margin` x the 99th percentile (when the 5th percentile
    falls in the first bin it is simply kept until then). Otherwise it is kept for the whole
    histogram range. When too many idle times fall beyond the range, the next idle time is
    forecast from the recent ones (their median) and the instance is prewarmed around it.
    """

    bin_s: float = 60.0
    range_s: float = 4 * 3600.0
    head_percentile: float = 5.0
    tail_percentile: float = 99.0
    prewarm_margin: float = 0.9
    keep_margin: float = 1.1
    cv_threshold: float = 2.0
    min_samples: int = 5
    out_of_range_share: float = 0.5
    forecast_margin: float = 0.15
    break_even_s: float | None = None
    """When set, the window is the one that minimizes warm time + `break_even_s` per cold start
    over the idle times seen, instead of the 5th-99th percentile rule."""
    start_cost_s: float = 0.0
    """With `break_even_s`: what an instance start (a cold start or a prewarm) costs besides,
    in seconds warm, so a plan does not unload and reload where keeping costs about the same."""
    reference_mb: float = 256.0
    """With `break_even_s`: a function of this much memory (see `memory_mb`) is priced at
    `break_even_s` per cold start; one of twice the memory at half of it (its warm time costs
    twice as much), so memory goes where it saves the most cold starts."""
    memory_mb: dict[str, float] = field(default_factory=dict)
    """Each function's memory, when known (the simulator and the live scheduler fill it)."""
    warmup_keep_alive_s: float | None = None
    """Keep-alive while a function has fewer than `min_samples` idle times (None: the range)."""
    prior: tuple[tuple[float, float], ...] = ()
    """With `break_even_s`: the idle times of the population of functions, as (upper bound in
    seconds, share) bands in order, each share spread evenly over its band (`math.inf`: beyond
    the range). A function with fewer than `prior_samples` idle times of its own is planned as if
    it also had `prior_weight` idle times drawn from them (`POPULATION_PRIOR`), and kept at
    most `prior_bound` keep-alives meanwhile."""
    prior_weight: float = 0.0
    prior_samples: int = 20
    prior_bound: float = 1.0
    """While planned on the prior, an idle instance is kept at most this many times the
    keep-alive (`decide`'s `warmup_keep_alive_s`): the operator's keep-alive still bounds a
    function the platform knows little about (`FN_KEEP_ALIVE=1s` scales it to zero in
    seconds)."""
    unseen: bool = False
    """With `break_even_s`: plan on the idle times seen completed with those not seen yet
    (`scheduler.windows.with_unseen`: one idle time in each empty stretch between the bins
    filled so far, and one above the largest), so a function's keep does not grow one cold
    start at a time."""
    timers: TimerDetector | None = None
    """When set, a function whose calls repeat at a timer's period (`scheduler.timers`) also
    gets an instance loaded for the minute of its next predicted call, once its histogram has
    learnt (never while the keep-alive applies), where the predictions pay: their hit rate is
    at least what a minute warm and a start cost against a cold start."""
    defer: Callable[[Callable[[], None]], object] | None = None
    """Runs a callable soon, off the call path (live: the event loop's `call_soon`); None:
    plans are recomputed inside the decision that finds them stale."""
    _functions: dict[str, IdleTimes] = field(default_factory=dict)
    """Each function's idle times: shared with other kinds by `learn_from`."""
    _stale: set[str] = field(default_factory=set)
    _plans_key: object = field(default_factory=object, repr=False, compare=False)
    """Its plans' key in the records it shares (unique, unlike an `id` once it is freed)."""
    _prior_bins: tuple[list[float], float] | None = None

    @property
    def name(self) -> str:
        if self.break_even_s is None:
            return "histogram"
        costs = (self.break_even_s, self.start_cost_s, self.prior_weight, self.prior_bound)
        adaptive = (ADAPTIVE_BREAK_EVEN_S, ADAPTIVE_START_COST_S, 1.0, ADAPTIVE_PRIOR_BOUND)
        if costs == adaptive and self.prior and self.timers is not None and self.unseen:
            return "adaptive"
        start = f"/{self.start_cost_s:g}s" if self.start_cost_s else ""
        prior = "+prior" if self.prior_weight else ""
        timers = "+timers" if self.timers is not None else ""
        unseen = "+unseen" if self.unseen else ""
        return f"histogram-cost:{self.break_even_s:g}s{start}{prior}{timers}{unseen}"

    def _state(self, function: str) -> IdleTimes:
        state = self._functions.get(function)
        if state is None:
            state = self._functions[function] = IdleTimes(
                bins=[0] * math.ceil(self.range_s / self.bin_s)
            )
        return state

    def learn_from(self, other: HybridHistogram) -> None:
        """Plan from `other`'s record of idle times, which only `other.learn` (or
        `other.on_arrival`) and the decisions update: one histogram per call for both."""
        if (self.bin_s, self.range_s) != (other.bin_s, other.range_s):
            raise ValueError("histograms with other bins cannot share their idle times")
        self._functions = other._functions

    def on_arrival(self, function: str, now: float) -> None:
        if self.timers is not None:
            self.timers.on_arrival(function, now)
        if self.learn(function, now):
            self.outdate(function)

    def learn(self, function: str, now: float) -> bool:
        """`on_arrival` without the timers and the plans: learn the idle time the call ends.
        True when a plan of `function` may have grown stale (see `outdate`)."""
        state = self._functions.get(function)
        if state is None:
            state = self._state(function)
        return state.arrive(now, self.bin_s, self.range_s)

    def outdate(self, function: str) -> None:
        """Recompute `function`'s plan if its histogram grew by 1 % since it was made (every
        sample while it is small). Not on the call path: live, while the call runs (`defer`);
        the simulator at once."""
        state = self._functions.get(function)
        plan = None if state is None else state.plans.get(self._plans_key)
        if state is None or plan is None or state.in_range < plan.due:
            return
        if self.defer is None:
            self._recompute(function, state)
        else:
            state.outdate(plan)
            self._stale.add(function)
            self.defer(self.refresh)

    def on_idle(self, function: str, now: float) -> Decision:
        return self.decide(function, now, self.warmup_keep_alive_s)

    def learning(self, function: str) -> bool:
        """Whether `decide` still answers with the warm-up keep-alive for `function`."""
        state = self._functions.get(function)
        if state is None:
            return True
        samples = state.in_range + state.out_of_range
        forecasting = (
            samples >= self.min_samples and state.out_of_range > self.out_of_range_share * samples
        )
        return not forecasting and state.in_range < self.min_samples

    def keep_bound(self, function: str) -> float | None:
        """While `decide` keeps `function`'s idle instances at most `prior_bound` keep-alives
        (it is planned on the prior): that multiple; else None."""
        state = self._functions.get(function)
        if not self.prior_weight or state is None:
            return None
        return (
            self.prior_bound if state.in_range + state.out_of_range < self.prior_samples else None
        )

    def decide(self, function: str, now: float, warmup_keep_alive_s: float | None) -> Decision:
        """`on_idle` with the keep-alive to use while the function's histogram is learning."""
        state = self._functions.get(function)
        if state is None:
            state = self._state(function)
        state.idle_since = now if state.called else None
        samples = state.in_range + state.out_of_range
        if samples >= self.min_samples and state.out_of_range > self.out_of_range_share * samples:
            predicted = statistics.median(state.recent_idle_s)
            return Decision(
                keep_until=now,
                prewarm_at=now + (1 - self.forecast_margin) * predicted,
                prewarm_until=now + (1 + self.forecast_margin) * predicted,
            )
        if state.in_range < self.min_samples:
            warmup_s = self.range_s if warmup_keep_alive_s is None else warmup_keep_alive_s
            return Decision(keep_until=now + warmup_s)
        plan = state.plans.get(self._plans_key)
        if plan is None or function in self._stale:
            self._stale.discard(function)  # (a deferred recomputation that has not run yet)
            plan = self._recompute(function, state)
        keep_s, start_s, end_s = plan.window
        keep: float
        at: float | None
        until: float | None
        if start_s <= keep_s:
            keep, at, until = now + max(keep_s, end_s), None, None
        else:
            keep, at, until = now + keep_s, now + start_s, now + end_s
        if self.timers is not None:
            keep, at, until = self._with_timer(function, now, (keep, at, until), plan.share)
        if (
            self.prior_weight and warmup_keep_alive_s is not None and samples < self.prior_samples
        ):  # planned on the prior: bounded by the keep-alive
            bound = now + warmup_keep_alive_s * self.prior_bound
            if keep > bound:
                keep = bound
        return Decision(keep, at, until)

    def _with_timer(self, function: str, now: float, plan: Triple, share: float) -> Triple:
        """`plan`, with the minute of the predicted next call covered: the instance kept
        through it when kept into it, else loaded for it unless the plan prewarms at another
        time and hits more often than its `share` (the two windows join when they touch)."""
        assert self.timers is not None
        window = self.timers.predict(function, now)
        if window is None:
            return plan
        hit_rate = self.timers.hit_rate(function)
        if (  # pays when hit rate x break-even covers its warm time + start
            self.break_even_s is not None
            and hit_rate * self.break_even_s < window[1] - window[0] + self.start_cost_s
        ):
            return plan
        return cover(plan, window, instead=hit_rate > share)

    def refresh(self) -> None:
        """Recompute the plans of the functions whose histogram moved since."""
        while self._stale:
            function = self._stale.pop()
            state = self._functions.get(function)
            if state is not None:
                self._recompute(function, state)

    def _recompute(self, function: str, state: IdleTimes) -> Plan:
        window = (
            self._cheapest_window(function, state)
            if self.break_even_s is not None
            else self._percentile_window(state)
        )
        _, start_s, end_s = window  # the share of idle times (bin middles) in its window
        first = max(0, math.ceil(start_s / self.bin_s - 0.5))
        last = min(len(state.bins), math.floor(end_s / self.bin_s - 0.5) + 1)
        inside = sum(state.bins[first:last]) if start_s < end_s else 0
        share = inside / max(1, state.in_range + state.out_of_range)
        return state.replan(self._plans_key, window, share)

    def forget(self, function: str) -> None:
        self._functions.pop(function, None)
        self._stale.discard(function)
        if self.timers is not None:
            self.timers.forget(function)

    def note_idle(self, function: str, now: float) -> None:
        """Learn from a function that another policy decides for (no decision computed)."""
        state = self._functions.get(function)
        if state is None:
            state = self._state(function)
        state.idle_since = now if state.called else None

    def _percentile_window(self, state: IdleTimes) -> tuple[float, float, float]:
        return percentile_plan(
            state.bins,
            state.in_range,
            state.sum_of_squares,
            bin_s=self.bin_s,
            range_s=self.range_s,
            percentiles=(self.head_percentile, self.tail_percentile),
            margins=(self.prewarm_margin, self.keep_margin),
            cv_threshold=self.cv_threshold,
        )

    def _cheapest_window(self, function: str, state: IdleTimes) -> tuple[float, float, float]:
        """The plan (keep, start, end), in seconds after going idle, that minimizes, over the
        idle times seen, the time kept warm plus `break_even_s` per cold start (and
        `start_cost_s` per instance start): keep the idle instance until `keep`, then (when
        `start` > `keep`) load one again at `start` and keep it until `end`. Two parts cover
        the common shape of short gaps within a burst and a long, regular gap between bursts
        (an hourly timer) at the cost of neither. O(bins): `scheduler.windows`."""
        assert self.break_even_s is not None
        scale = self.reference_mb / self.memory_mb.get(function, self.reference_mb)
        counts: Sequence[float] = state.bins
        beyond = float(state.out_of_range)
        if self.unseen:
            counts, beyond = with_unseen(state.bins, state.out_of_range)
        if self.prior_weight and state.in_range + state.out_of_range < self.prior_samples:
            shares, share_beyond = self._prior_shares()
            w = self.prior_weight
            pairs = enumerate(zip(counts, shares, strict=True))
            bins = [(i, c + w * p) for i, (c, p) in pairs if c or p]
            beyond += w * share_beyond
        else:
            bins = [(i, c) for i, c in enumerate(counts) if c]
        return cheapest_plan(
            bins,
            beyond,
            bin_s=self.bin_s,
            break_even_s=self.break_even_s * scale,
            start_cost_s=self.start_cost_s * scale,
            keep_margin=self.keep_margin,
            prewarm_margin=self.prewarm_margin,
        )

    def _prior_shares(self) -> tuple[list[float], float]:
        if self._prior_bins is None:
            self._prior_bins = prior_shares(self.prior, bin_s=self.bin_s, range_s=self.range_s)
        return self._prior_bins


@dataclass(slots=True, frozen=True, kw_only=True)
class FunctionPolicy:
    """What an operator sets per function (or as the default): see docs/policies.md."""

    prewarm: str = "adaptive"
    """`adaptive` (the default), `histogram-cost` or `histogram`: a histogram of the function's
    idle times, with `keep_alive_s` as its keep-alive while it learns them; `fixed`: keep idle
    instances for `keep_alive_s`. See docs/policies.md."""
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    min_warm: int = 0
    """Instances kept warm even when idle (never scaled below this)."""
    max_instances: int = 20


def cost_histogram(break_even_s: float = 7200.0, start_cost_s: float = 0.0) -> HybridHistogram:
    """The histogram in cost mode (`histogram-cost`): see docs/policies.md."""
    return HybridHistogram(
        break_even_s=break_even_s,
        start_cost_s=start_cost_s,
        warmup_keep_alive_s=DEFAULT_KEEP_ALIVE_S,
        min_samples=3,
        prewarm_margin=1.0,
        keep_margin=1.0,
        reference_mb=1024.0,
    )


ADAPTIVE_BREAK_EVEN_S = 1800.0
ADAPTIVE_START_COST_S = 240.0
ADAPTIVE_PRIOR_BOUND = 3.0


def adaptive_histogram() -> HybridHistogram:
    """The default (`adaptive`): the cost plan with a 30-minute break-even per cold start and
    4 minutes per instance start, chosen on half of the trace sample, on the idle times seen
    completed with those not seen yet (`with_unseen`); a function's first 20 idle times also
    completed by one drawn from `POPULATION_PRIOR` (kept at most 3 keep-alives meanwhile, the
    keep-alive itself until its first idle time); timer prediction (`scheduler.timers`). See
    docs/policies.md."""
    histogram = cost_histogram(ADAPTIVE_BREAK_EVEN_S, ADAPTIVE_START_COST_S)
    histogram.prior = POPULATION_PRIOR
    histogram.prior_weight = 1.0
    histogram.prior_bound = ADAPTIVE_PRIOR_BOUND
    histogram.min_samples = 1
    histogram.timers = TimerDetector()
    histogram.unseen = True
    return histogram


def parse_policy(spec: str) -> Policy:
    """`fixed:10m`, `fixed:600`, `histogram`, `histogram-cost:2h`, `histogram-cost:30m/5m`
    (break-even / start cost), `adaptive`, `adaptive:45m/4m` (its prices changed) -> a policy
    object; ValueError names the spec."""
    kind, _, arg = spec.partition(":")
    if kind == "fixed":
        return FixedKeepAlive(_seconds(arg, spec) if arg else DEFAULT_KEEP_ALIVE_S)
    if kind == "histogram" and not arg:
        return HybridHistogram()
    if kind == "adaptive" and not arg:
        return adaptive_histogram()
    if kind in ("histogram-cost", "adaptive"):
        if not arg:
            return cost_histogram()
        break_even, _, start_cost = arg.partition("/")
        prices = (_seconds(break_even, spec), _seconds(start_cost, spec) if start_cost else 0.0)
        if kind == "histogram-cost":
            return cost_histogram(*prices)
        histogram = adaptive_histogram()  # with other prices: for the simulator's sweeps
        histogram.break_even_s, histogram.start_cost_s = prices
        return histogram
    raise ValueError(
        f'unknown policy "{spec}": expected fixed:DURATION (like fixed:10m), histogram, '
        "histogram-cost[:BREAK_EVEN[/START_COST]] (like histogram-cost:2h) or "
        "adaptive[:BREAK_EVEN/START_COST]"
    )


def _seconds(text: str, spec: str) -> float:
    """A policy's duration (`30s`, `10m`, `1h`, seconds) via `config.units`; 0 is allowed."""
    if text.startswith("-") and duration_text_s(text[1:]) is not None:
        raise ValueError(f'invalid policy "{spec}": the keep-alive cannot be negative')
    value = duration_text_s(text)
    if value is None:
        raise ValueError(f'invalid policy "{spec}": the keep-alive must be like 30s, 10m or 1h')
    return value
