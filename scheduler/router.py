"""The live policy: each function's settings (`FunctionPolicy`) pick the policy that decides
for it, fixed keep-alive or one of the histograms, all of them learning every function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from scheduler.policy import (
    Decision,
    FunctionPolicy,
    HybridHistogram,
    adaptive_histogram,
    cost_histogram,
)

__all__ = ["FunctionPolicy", "PolicyRouter"]  # the settings, with the router they steer


class PolicyRouter:
    """The live policy: each function's settings pick fixed keep-alive or the histogram.

    Every function's idle times are learnt all the time, so switching a function to the
    histogram uses what was seen before the switch. The histograms share one record of them
    (`HybridHistogram.learn_from`): a call updates one histogram, not one per kind, and a kind
    a function does not use plans for it only when asked (after a switch).
    """

    def __init__(self, default: FunctionPolicy | None = None) -> None:
        self.default = default or FunctionPolicy()
        self.overrides: dict[str, FunctionPolicy] = {}
        self.histograms: Mapping[str, HybridHistogram] = {}
        self._learners: tuple[HybridHistogram, ...] = ()
        self.use_histograms(
            {
                "histogram": HybridHistogram(),
                "histogram-cost": cost_histogram(),
                "adaptive": adaptive_histogram(),
            }
        )

    def use_histograms(self, histograms: dict[str, HybridHistogram]) -> None:
        """Decide with these histograms (by `prewarm` kind), from now on. Those with the same
        bins share one record of idle times, which one of them (a learner) updates per call."""
        learnt = [learner._functions for learner in self._learners]
        learners: list[HybridHistogram] = []  # first those that share what was learnt
        ordered = sorted(
            histograms.values(), key=lambda h: all(h._functions is not f for f in learnt)
        )
        for histogram in ordered:
            for learner in learners:
                if (learner.bin_s, learner.range_s) == (histogram.bin_s, histogram.range_s):
                    histogram.learn_from(learner)
                    break
            else:
                learners.append(histogram)
        owners = {h._plans_key for h in histograms.values()}
        for learner in learners:  # plans of histograms replaced would keep `due` down
            for record in learner._functions.values():
                record.keep_plans(owners)
        self.histograms = MappingProxyType(dict(histograms))  # changed here only
        self._learners = tuple(learners)
        self._timers = tuple(h.timers for h in histograms.values() if h.timers is not None)
        self._noting: dict[str, tuple[HybridHistogram, ...]] = {  # the learners not deciding
            kind: tuple(learner for learner in learners if learner._functions is not h._functions)
            for kind, h in histograms.items()
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
        for timers in self._timers:
            timers.on_arrival(function, now)
        for learner in self._learners:
            if learner.learn(function, now):  # a plan may be stale: each kind checks its own
                for histogram in self.histograms.values():
                    histogram.outdate(function)

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

    def keep_alive_bound_s(self, function: str) -> float | None:
        """How long the function's idle instances may be kept at most now, when its keep-alive
        bounds its policy's plan (adaptive, while it plans on the population prior)."""
        settings = self.settings(function)
        histogram = self.histograms.get(settings.prewarm)
        factor = None if histogram is None else histogram.keep_bound(function)
        return None if factor is None else factor * settings.keep_alive_s

    def on_idle(self, function: str, now: float) -> Decision:
        settings = self.overrides.get(function, self.default)
        kind = settings.prewarm
        for learner in self._noting.get(kind, self._learners):
            learner.note_idle(function, now)
        histogram = self.histograms.get(kind)
        if histogram is None:
            return Decision(now + settings.keep_alive_s)
        return histogram.decide(function, now, settings.keep_alive_s)
