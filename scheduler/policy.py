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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from config.units import duration_text_s
from scheduler.timers import TimerDetector
from scheduler.windows import cheapest_plan

DEFAULT_KEEP_ALIVE_S = 600.0
"""Idle seconds before an instance stops, unless an operator sets another: 10 min, as
OpenWhisk. The one place this default is written (`fn up --keep-alive`, FN_KEEP_ALIVE)."""


@dataclass(slots=True, frozen=True)
class Decision:
    """What to do with a function's instance that just went idle at `now`."""

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
class _Histogram:
    bins: list[int]
    in_range: int = 0
    out_of_range: int = 0
    idle_since: float | None = None
    recent_idle_s: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    window: tuple[float, float, float] | None = None
    """(keep, start, end) in seconds after going idle: keep warm until `keep`, then (if
    `start` > `keep`) prewarm at `start` and keep until `end`. Cached."""
    window_samples: int = -1
    window_share: float = 0.0
    """The share of the idle times seen that fall in the window's second part."""
    sum_of_squares: int = 0
    """Of the bin counts: the coefficient of variation in O(1)."""


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
    timers: TimerDetector | None = None
    """When set, a function whose calls repeat at a timer's period (`scheduler.timers`) also
    gets an instance loaded for the minute of its next predicted call, once its histogram has
    learnt (never while the keep-alive applies), where the predictions pay: their hit rate is
    at least what a minute warm and a start cost against a cold start."""
    defer: Callable[[Callable[[], None]], object] | None = None
    """Runs a callable soon, off the call path (live: the event loop's `call_soon`); None:
    plans are recomputed inside the decision that finds them stale."""
    _functions: dict[str, _Histogram] = field(default_factory=dict)
    _stale: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        if self.break_even_s is None:
            return "histogram"
        costs = (self.break_even_s, self.start_cost_s)
        if costs == (ADAPTIVE_BREAK_EVEN_S, ADAPTIVE_START_COST_S) and self.timers is not None:
            return "adaptive"
        start = f"/{self.start_cost_s:g}s" if self.start_cost_s else ""
        timers = "+timers" if self.timers is not None else ""
        return f"histogram-cost:{self.break_even_s:g}s{start}{timers}"

    def _state(self, function: str) -> _Histogram:
        state = self._functions.get(function)
        if state is None:
            state = self._functions[function] = _Histogram(
                bins=[0] * math.ceil(self.range_s / self.bin_s)
            )
        return state

    def on_arrival(self, function: str, now: float) -> None:
        if self.timers is not None:
            self.timers.on_arrival(function, now)
        state = self._state(function)
        if state.idle_since is None:
            return
        idle_s = max(0.0, now - state.idle_since)
        state.idle_since = None
        state.recent_idle_s.append(idle_s)
        if idle_s < self.range_s:
            index = int(idle_s // self.bin_s)
            state.sum_of_squares += 2 * state.bins[index] + 1
            state.bins[index] += 1
            state.in_range += 1
        else:
            state.out_of_range += 1
        # The plan is recomputed when the histogram grew by 1% (every sample while it is
        # small): a busy function goes idle after every call and its plan barely moves. Not
        # on the call path: live, while the call runs (`defer`); the simulator at once.
        if state.window is not None and state.in_range - state.window_samples >= max(
            1, state.in_range // 100
        ):
            if self.defer is None:
                self._recompute(function, state)
            elif function not in self._stale:
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

    def decide(self, function: str, now: float, warmup_keep_alive_s: float | None) -> Decision:
        """`on_idle` with the keep-alive to use while the function's histogram is learning."""
        state = self._state(function)
        state.idle_since = now
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
        if state.window is None or function in self._stale:
            self._stale.discard(function)  # (a deferred recomputation that has not run yet)
            self._recompute(function, state)
        assert state.window is not None
        keep_s, start_s, end_s = state.window
        if start_s <= keep_s:
            decision = Decision(keep_until=now + max(keep_s, end_s))
        else:
            decision = Decision(
                keep_until=now + keep_s, prewarm_at=now + start_s, prewarm_until=now + end_s
            )
        return decision if self.timers is None else self._with_timer(function, now, decision)

    def _with_timer(self, function: str, now: float, decision: Decision) -> Decision:
        """`decision`, with the minute of the predicted next call covered: the instance kept
        through it when kept into it, else loaded for it unless the plan prewarms at another
        time (its window is widened to the minute when they touch)."""
        assert self.timers is not None
        window = self.timers.predict(function, now)
        if window is None:
            return decision
        start, end = window
        if self.break_even_s is not None:  # pays when hit rate x break-even > its cost
            worth = (end - start + self.start_cost_s) / self.break_even_s
            if self.timers.hit_rate(function) < worth:
                return decision
        keep = decision.keep_until
        if end <= keep:
            return decision
        if start <= keep:
            return Decision(
                keep_until=end,
                prewarm_at=decision.prewarm_at,
                prewarm_until=decision.prewarm_until,
            )
        at = decision.prewarm_at
        if at is None:
            return Decision(keep_until=keep, prewarm_at=start, prewarm_until=end)
        until = decision.prewarm_until if decision.prewarm_until is not None else at
        if start <= until and end >= at:
            return Decision(
                keep_until=keep, prewarm_at=min(at, start), prewarm_until=max(until, end)
            )
        state = self._functions[function]
        if start < at and self.timers.hit_rate(function) > state.window_share:
            return Decision(keep_until=keep, prewarm_at=start, prewarm_until=end)
        return decision

    def refresh(self) -> None:
        """Recompute the plans of the functions whose histogram moved since."""
        while self._stale:
            function = self._stale.pop()
            state = self._functions.get(function)
            if state is not None:
                self._recompute(function, state)

    def _recompute(self, function: str, state: _Histogram) -> None:
        state.window = (
            self._cheapest_window(function, state)
            if self.break_even_s is not None
            else self._percentile_window(state)
        )
        state.window_samples = state.in_range
        _, start_s, end_s = state.window
        inside = sum(
            c for i, c in enumerate(state.bins) if c and start_s <= (i + 0.5) * self.bin_s <= end_s
        )
        state.window_share = inside / max(1, state.in_range + state.out_of_range)

    def forget(self, function: str) -> None:
        self._functions.pop(function, None)
        self._stale.discard(function)
        if self.timers is not None:
            self.timers.forget(function)

    def note_idle(self, function: str, now: float) -> None:
        """Learn from a function that another policy decides for (no decision computed)."""
        self._state(function).idle_since = now

    def _percentile_window(self, state: _Histogram) -> tuple[float, float, float]:
        if self._cv(state) < self.cv_threshold:
            return 0.0, 0.0, self.range_s
        head_s = self._percentile_bin(state, self.head_percentile) * self.bin_s
        tail_s = (self._percentile_bin(state, self.tail_percentile) + 1) * self.bin_s
        return 0.0, self.prewarm_margin * head_s, self.keep_margin * tail_s

    def _cheapest_window(self, function: str, state: _Histogram) -> tuple[float, float, float]:
        """The plan (keep, start, end), in seconds after going idle, that minimizes, over the
        idle times seen, the time kept warm plus `break_even_s` per cold start (and
        `start_cost_s` per instance start): keep the idle instance until `keep`, then (when
        `start` > `keep`) load one again at `start` and keep it until `end`. Two parts cover
        the common shape of short gaps within a burst and a long, regular gap between bursts
        (an hourly timer) at the cost of neither. O(bins): `scheduler.windows`."""
        assert self.break_even_s is not None
        scale = self.reference_mb / self.memory_mb.get(function, self.reference_mb)
        return cheapest_plan(
            [(i, c) for i, c in enumerate(state.bins) if c],
            state.out_of_range,
            bin_s=self.bin_s,
            break_even_s=self.break_even_s * scale,
            start_cost_s=self.start_cost_s * scale,
            keep_margin=self.keep_margin,
            prewarm_margin=self.prewarm_margin,
        )

    def _cv(self, state: _Histogram) -> float:
        n = len(state.bins)
        mean = state.in_range / n
        variance = max(0.0, state.sum_of_squares / n - mean * mean)
        return math.sqrt(variance) / mean if mean else 0.0

    @staticmethod
    def _percentile_bin(state: _Histogram, percentile: float) -> int:
        threshold = percentile / 100 * state.in_range
        seen = 0
        for index, count in enumerate(state.bins):
            seen += count
            if count and seen >= threshold:
                return index
        return len(state.bins) - 1


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


class PolicyRouter:
    """The live policy: each function's settings pick fixed keep-alive or the histogram.

    Every function's idle times are learnt all the time, so switching a function to the
    histogram uses what was seen before the switch.
    """

    def __init__(self, default: FunctionPolicy | None = None) -> None:
        self.default = default or FunctionPolicy()
        self.overrides: dict[str, FunctionPolicy] = {}
        self.histograms: dict[str, HybridHistogram] = {
            "histogram": HybridHistogram(),
            "histogram-cost": cost_histogram(),
            "adaptive": adaptive_histogram(),
        }

    @property
    def name(self) -> str:
        return "router"

    def settings(self, function: str) -> FunctionPolicy:
        return self.overrides.get(function, self.default)

    @property
    def histogram(self) -> HybridHistogram:
        return self.histograms["histogram"]

    def note_memory(self, function: str, memory_mb: float) -> None:
        """The function's memory (its limit, live), which the cost mode weighs."""
        for histogram in self.histograms.values():
            if histogram.break_even_s is not None:
                histogram.memory_mb[function] = memory_mb

    def on_arrival(self, function: str, now: float) -> None:
        for histogram in self.histograms.values():
            histogram.on_arrival(function, now)

    def forget(self, function: str) -> None:
        self.overrides.pop(function, None)
        for histogram in self.histograms.values():
            histogram.forget(function)
            histogram.memory_mb.pop(function, None)

    def defer_to(self, defer: Callable[[Callable[[], None]], object]) -> None:
        """Recompute the histograms' plans off the call path, with `defer` (`call_soon`)."""
        for histogram in self.histograms.values():
            histogram.defer = defer

    def keeps_for_keep_alive(self, function: str) -> bool:
        """Whether the function's idle instances are kept for its `keep_alive_s` now: under a
        fixed keep-alive, or while its histogram is still learning."""
        histogram = self.histograms.get(self.settings(function).prewarm)
        return histogram is None or histogram.learning(function)

    def on_idle(self, function: str, now: float) -> Decision:
        settings = self.settings(function)
        decision = Decision(keep_until=now + settings.keep_alive_s)
        for kind, histogram in self.histograms.items():
            if kind == settings.prewarm:
                decision = histogram.decide(function, now, settings.keep_alive_s)
            else:
                histogram.note_idle(function, now)
        return decision


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
ADAPTIVE_START_COST_S = 300.0


def adaptive_histogram() -> HybridHistogram:
    """The default (`adaptive`): the cost plan with a 30-minute break-even per cold start and
    5 minutes per instance start, chosen on half of the trace sample, plus timer prediction
    (`scheduler.timers`): docs/policies.md."""
    histogram = cost_histogram(ADAPTIVE_BREAK_EVEN_S, ADAPTIVE_START_COST_S)
    histogram.timers = TimerDetector()
    return histogram


def parse_policy(spec: str) -> Policy:
    """`fixed:10m`, `fixed:600`, `histogram`, `histogram-cost:2h`, `histogram-cost:30m/5m`
    (break-even / start cost), `adaptive` -> a policy object; ValueError names the spec."""
    kind, _, arg = spec.partition(":")
    if kind == "fixed":
        return FixedKeepAlive(_seconds(arg, spec) if arg else DEFAULT_KEEP_ALIVE_S)
    if kind == "histogram" and not arg:
        return HybridHistogram()
    if kind == "adaptive" and not arg:
        return adaptive_histogram()
    if kind == "histogram-cost":
        if not arg:
            return cost_histogram()
        break_even, _, start_cost = arg.partition("/")
        return cost_histogram(
            _seconds(break_even, spec), _seconds(start_cost, spec) if start_cost else 0.0
        )
    raise ValueError(
        f'unknown policy "{spec}": expected fixed:DURATION (like fixed:10m), histogram, '
        "histogram-cost[:BREAK_EVEN[/START_COST]] (like histogram-cost:2h) or adaptive"
    )


def _seconds(text: str, spec: str) -> float:
    """A policy's duration (`30s`, `10m`, `1h`, seconds) via `config.units`; 0 is allowed."""
    if text.startswith("-") and duration_text_s(text[1:]) is not None:
        raise ValueError(f'invalid policy "{spec}": the keep-alive cannot be negative')
    value = duration_text_s(text)
    if value is None:
        raise ValueError(f'invalid policy "{spec}": the keep-alive must be like 30s, 10m or 1h')
    return value
