"""What `/metrics` shows of the broker sources this gateway consumes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from events.sources.runner import SourceStats

LABELS = ["trigger", "function", "kind"]


class SourceCollector(Collector):
    def __init__(self, stats: Callable[[], list[SourceStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        lag = GaugeMetricFamily(
            "ember_source_lag_messages",
            "Messages waiting on the broker for a source (not for MQTT, whose brokers do not "
            "say), sampled every few seconds",
            labels=LABELS,
        )
        messages = CounterMetricFamily(
            "ember_source_messages",
            "Broker messages committed as deliveries by this gateway",
            labels=LABELS,
        )
        duplicates = CounterMetricFamily(
            "ember_source_duplicates",
            "Broker messages given again after they had been committed (recognised by id, "
            "not delivered twice)",
            labels=LABELS,
        )
        reconnects = CounterMetricFamily(
            "ember_source_reconnects", "Connections to a broker lost or refused", labels=LABELS
        )
        connected = GaugeMetricFamily(
            "ember_source_connected", "1 while a source is connected to its broker", labels=LABELS
        )
        paused = GaugeMetricFamily(
            "ember_source_paused",
            "1 while a source takes nothing because its function's backlog is full",
            labels=LABELS,
        )
        for s in stats:
            labels = [str(s.trigger), s.function, s.kind]
            if s.lag is not None:
                lag.add_metric(labels, s.lag)
            messages.add_metric(labels, s.messages)
            duplicates.add_metric(labels, s.duplicates)
            reconnects.add_metric(labels, s.reconnects)
            connected.add_metric(labels, int(s.connected))
            paused.add_metric(labels, int(s.paused))
        yield from (lag, messages, duplicates, reconnects, connected, paused)
