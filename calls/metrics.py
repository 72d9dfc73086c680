"""Prometheus metrics of one platform, in a registry of its own (`/metrics`)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


class _PoolCollector(Collector):
    def __init__(
        self,
        counts: Callable[[], dict[str, int]],
        starts: Callable[[], int],
        dropped: Callable[[], int],
        pool: Callable[[], PoolReadout],
    ) -> None:
        self._counts = counts
        self._starts = starts
        self._dropped = dropped
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("ember_instances", "Invoker instances by state", labels=["state"])
        for state, n in sorted(self._counts().items()):
            gauge.add_metric([state], n)
        yield gauge
        starts = GaugeMetricFamily(
            "ember_instance_process_starts", "Invoker processes started since the platform started"
        )
        starts.add_metric([], self._starts())
        yield starts
        dropped = CounterMetricFamily(
            "ember_activations_dropped",
            "Activation records lost: over the in-memory bound while the database was away, "
            "or refused by it",
        )
        dropped.add_metric([], self._dropped())
        yield dropped
        readout = self._pool()
        warm = GaugeMetricFamily(
            "ember_warm_instances",
            "Specialized instances (busy or idle), per function",
            labels=["function"],
        )
        for function, n in sorted(readout.warm.items()):
            warm.add_metric([function], n)
        yield warm
        idle = CounterMetricFamily(
            "ember_idle_instance_seconds",
            "Seconds specialized instances spent warm and idle",
            labels=["function"],
        )
        for function, seconds in sorted(readout.idle_s.items()):
            idle.add_metric([function], seconds)
        yield idle
        prewarms = CounterMetricFamily(
            "ember_prewarms", "Instances started ahead of an expected call", labels=["function"]
        )
        for function, n in sorted(readout.prewarm_starts.items()):
            prewarms.add_metric([function], n)
        yield prewarms
        outcomes = CounterMetricFamily(
            "ember_prewarm_outcomes",
            "Prewarmed instances that served a call (used) or expired unused (wasted)",
            labels=["function", "outcome"],
        )
        for (function, outcome), n in sorted(readout.prewarm_outcomes.items()):
            outcomes.add_metric([function, outcome], n)
        yield outcomes
        evictions = CounterMetricFamily(
            "ember_evictions",
            "Idle instances stopped early to make room for another (the node at its capacity)",
        )
        evictions.add_metric([], readout.evictions)
        yield evictions
        memory = GaugeMetricFamily(
            "ember_instance_memory_bytes",
            "The memory limits of the node's instances added up, and the cap on them",
            labels=["kind"],
        )
        memory.add_metric(["charged"], readout.memory_bytes)
        memory.add_metric(["capacity"], readout.capacity_memory_bytes)
        yield memory
        cap = GaugeMetricFamily(
            "ember_instance_capacity", "Instances the node runs at most (FN_MAX_INSTANCES_TOTAL)"
        )
        cap.add_metric([], readout.capacity_instances)
        yield cap


class _QueueCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ember_delivery_queue_depth",
            "Deliveries waiting (pending), in progress (running) or dead-lettered (dead), as "
            "last sampled",
            labels=["function", "status"],
        )
        for (function, status), n in sorted(self._metrics.queue_depth.items()):
            depth.add_metric([function, status], n)
        yield depth


@dataclass(slots=True, frozen=True)
class PoolReadout:
    warm: dict[str, int]
    idle_s: dict[str, float]
    prewarm_starts: dict[str, int]
    prewarm_outcomes: dict[tuple[str, str], int]
    evictions: int = 0
    memory_bytes: int = 0
    """The memory limits of the node's instances, added up (what the capacity counts)."""
    capacity_instances: int = 0
    capacity_memory_bytes: int = 0


class Metrics:
    def __init__(
        self,
        counts: Callable[[], dict[str, int]],
        starts: Callable[[], int],
        dropped: Callable[[], int],
        pool: Callable[[], PoolReadout],
    ) -> None:
        self.registry = CollectorRegistry()
        # First in the registry: whoever reads it sees the calls counted since the last read.
        self.registry.register(_Flush(self.flush))
        self.invocations = Counter(
            "ember_invocations",
            "Calls to functions, by outcome",
            ["function", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ember_invocation_duration_seconds",
            "Time from request to response, per function",
            ["function"],
            buckets=_BUCKETS_S,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "ember_cold_starts",
            "Calls that waited for an instance to be started or specialized",
            ["function"],
            registry=self.registry,
        )
        self.deploys = Counter(
            "ember_deploys", "Deploy attempts, by outcome", ["status"], registry=self.registry
        )
        self.warm_hits = Counter(
            "ember_warm_hits",
            "Calls served by an instance that was already warm",
            ["function"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "ember_delivery_attempts",
            "Attempts to deliver async invocations and events, by "
            "outcome (succeeded, retry, dead, throttled)",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "ember_dead_letters", "Deliveries dead-lettered", ["function"], registry=self.registry
        )
        self.redeliveries = Counter(
            "ember_redeliveries",
            "Deliveries claimed again after a lease ran out (the earlier "
            "attempt may have run: a possible duplicate)",
            ["function"],
            registry=self.registry,
        )
        self.delivery_wait = Histogram(
            "ember_delivery_wait_seconds",
            "From submission to the first attempt's start",
            ["source"],
            buckets=_BUCKETS_S,
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "ember_delivery_latency_seconds",
            "From submission to the handler's success (all attempts)",
            ["source"],
            buckets=_BUCKETS_S,
            registry=self.registry,
        )
        self.pruned_rows = Counter(
            "ember_pruned_rows",
            "Rows deleted by retention (age or count), per table",
            ["table"],
            registry=self.registry,
        )
        self.queue_depth: dict[tuple[str, str], int] = {}
        self.registry.register(_QueueCollector(self))
        self.registry.register(_PoolCollector(counts, starts, dropped, pool))
        self._children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._pending: dict[tuple[str, str], _Calls] = {}

    def observe_call(self, function: str, status: str, elapsed_s: float, cold: bool) -> None:
        """Count one call. This runs on every call: it adds to plain numbers per (function,
        status), which `flush` adds to the Prometheus metrics whenever the registry is read,
        instead of three updates of them (each a few Python calls and a lock)."""
        key = (function, status)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Calls(buckets=[0] * len(_BOUNDS))
        pending.calls += 1
        pending.cold += cold
        pending.sum_s += elapsed_s
        pending.buckets[bisect.bisect_left(_BOUNDS, elapsed_s)] += 1

    def flush(self) -> None:
        """Add the calls counted since the last flush to the Prometheus metrics."""
        pending, self._pending = self._pending, {}
        for (function, status), calls in pending.items():
            children = self._children.get((function, status))
            if children is None:
                children = self._children[(function, status)] = (
                    self.invocations.labels(function, status),
                    self.duration.labels(function),
                    self.cold_starts.labels(function),
                    self.warm_hits.labels(function),
                )
            invocations, duration, cold_starts, warm_hits = children
            invocations.inc(calls.calls)
            # (What `observe` does per value: its sum, and the first bucket at or above it.)
            duration._sum.inc(calls.sum_s)
            for value, n in zip(duration._buckets, calls.buckets, strict=True):
                if n:
                    value.inc(n)
            if calls.cold:
                cold_starts.inc(calls.cold)
            if calls.calls > calls.cold:
                warm_hits.inc(calls.calls - calls.cold)


_BOUNDS = (*_BUCKETS_S, math.inf)


@dataclass(slots=True, kw_only=True)
class _Calls:
    """Calls of one (function, status) not yet in the Prometheus metrics."""

    calls: int = 0
    cold: int = 0
    sum_s: float = 0.0
    buckets: list[int]
    """Per bucket of `_BOUNDS`: the calls whose time is at most its bound and over the one
    before (what the histogram's own `observe` counts)."""


class _Flush(Collector):
    """Yields nothing; collected first, it adds the pending calls to the metrics."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def collect(self) -> Iterator[Metric]:
        self._flush()
        return iter(())
