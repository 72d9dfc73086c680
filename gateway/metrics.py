"""Prometheus metrics of one platform, in a registry of its own (`/metrics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
              30, 60)


class _PoolCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]], starts: Callable[[], int],
                 dropped: Callable[[], int]) -> None:
        self._counts = counts
        self._starts = starts
        self._dropped = dropped

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("ember_instances", "Invoker instances by state",
                                  labels=["state"])
        for state, n in sorted(self._counts().items()):
            gauge.add_metric([state], n)
        yield gauge
        starts = GaugeMetricFamily("ember_instance_process_starts",
                                   "Invoker processes started since the platform started")
        starts.add_metric([], self._starts())
        yield starts
        dropped = CounterMetricFamily(
            "ember_activations_dropped",
            "Activation records lost: over the in-memory bound while the database was away, "
            "or refused by it")
        dropped.add_metric([], self._dropped())
        yield dropped


class Metrics:
    def __init__(self, counts: Callable[[], dict[str, int]], starts: Callable[[], int],
                 dropped: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "ember_invocations", "Calls to functions, by outcome",
            ["function", "status"], registry=self.registry)
        self.duration = Histogram(
            "ember_invocation_duration_seconds", "Time from request to response, per function",
            ["function"], buckets=_BUCKETS_S, registry=self.registry)
        self.cold_starts = Counter(
            "ember_cold_starts", "Calls that waited for an instance to be started or specialized",
            ["function"], registry=self.registry)
        self.deploys = Counter(
            "ember_deploys", "Deploy attempts, by outcome", ["status"], registry=self.registry)
        self.registry.register(_PoolCollector(counts, starts, dropped))
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def observe_call(self, function: str, status: str, elapsed_s: float, cold: bool) -> None:
        """Count one call (labelled children cached: this runs on every call)."""
        key = (function, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.invocations.labels(function, status), self.duration.labels(function),
                self.cold_starts.labels(function))
        children[0].inc()
        children[1].observe(elapsed_s)
        if cold:
            children[2].inc()
