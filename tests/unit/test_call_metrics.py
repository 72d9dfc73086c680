"""The per-call metrics, counted in plain numbers and added to Prometheus's when read, read the
same as Prometheus's own updates would."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from calls.metrics import _BUCKETS_S, Metrics, PoolReadout

CALLS = [
    ("echo", "success", 0.0003, False),
    ("echo", "success", 0.0005, False),  # on a bucket's bound: counted in that bucket
    ("echo", "success", 0.0005000001, True),
    ("echo", "error", 0.7, False),
    ("echo", "success", 99.0, False),  # past the last bound: +Inf only
    ("other", "timeout", 30.0, True),
    *(("echo", "success", b, False) for b in _BUCKETS_S),
]


def _metrics() -> Metrics:
    return Metrics(lambda: {}, lambda: 0, lambda: 0, lambda: PoolReadout({}, {}, {}, {}))


def _exposition(metrics: Metrics) -> str:
    text = generate_latest(metrics.registry).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


def test_counted_calls_read_as_prometheus_updates_would() -> None:
    counted, direct = _metrics(), _metrics()
    for function, status, elapsed_s, cold in CALLS:
        counted.observe_call(function, status, elapsed_s, cold)
        # (As before: the four children of a (function, status) made at its first call.)
        cold_starts = direct.cold_starts.labels(function)
        warm_hits = direct.warm_hits.labels(function)
        direct.invocations.labels(function, status).inc()
        direct.duration.labels(function).observe(elapsed_s)
        (cold_starts if cold else warm_hits).inc()
    assert _exposition(counted) == _exposition(direct)
    assert 'ember_invocations_total{function="echo",status="success"} 20.0' in _exposition(counted)


def test_calls_counted_between_reads_are_added_once() -> None:
    metrics = _metrics()
    metrics.observe_call("echo", "success", 0.001, False)
    first = _exposition(metrics)
    assert _exposition(metrics) == first  # a second read adds nothing
    metrics.observe_call("echo", "success", 0.001, True)
    text = _exposition(metrics)
    assert 'ember_invocations_total{function="echo",status="success"} 2.0' in text
    assert 'ember_cold_starts_total{function="echo"} 1.0' in text
    assert 'ember_warm_hits_total{function="echo"} 1.0' in text
    count = re.search(r'ember_invocation_duration_seconds_count\{function="echo"\} (\S+)', text)
    assert count is not None
    assert count[1] == "2.0"
