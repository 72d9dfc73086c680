"""How async invocations and events are delivered: the event system's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True, kw_only=True)
class EventSettings:
    """How async invocations and events are delivered (see docs/events.md)."""

    workers: bool = True
    """Run delivery workers, schedules and table relays in this gateway (FN_DELIVERIES=0: no)."""
    concurrency: int = 64
    """Deliveries one gateway runs at once (FN_DELIVERY_CONCURRENCY)."""
    lease_margin_s: float = 120.0
    """A claimed delivery is leased for its function's timeout plus this (FN_DELIVERY_LEASE),
    which covers waiting for an instance (the queue timeout, a cold start) and recording the
    outcome; if the gateway dies, another takes the delivery over when the lease ends."""
    retry_base_s: float = 1.0
    """First retry delay (FN_RETRY_BASE); doubled each attempt, with jitter."""
    retry_max_s: float = 600.0
    """Longest retry delay (FN_RETRY_MAX)."""
    poll_s: float = 1.0
    """How often workers look for due work without a notification (FN_DELIVERY_POLL)."""
    retention_s: float = 7 * 86400.0
    """How long succeeded deliveries are kept for `fn activation`, and published events'
    idempotency keys (FN_DELIVERY_RETENTION); the platform's pruner deletes them
    (gateway/retention.py, which also caps their count)."""
    heartbeat_s: float = 2.0
    """How often a gateway notes in Postgres that it is alive (FN_GATEWAY_HEARTBEAT)."""
    gateway_dead_after_s: float = 15.0
    """A gateway silent this long is taken for dead and its claimed deliveries are retried at
    once, without waiting for their leases (FN_GATEWAY_DEAD_AFTER). A restart on the same state
    dir releases the previous run's claims at start, without waiting at all."""
    source_batch: int = 256
    """Messages a broker source takes from its broker and commits at once, at most
    (FN_SOURCE_BATCH)."""
    source_max_backlog: int = 2000
    """A broker source stops taking messages while its function has this many deliveries from
    it waiting or running (FN_SOURCE_MAX_BACKLOG): back-pressure, the rest waits on the broker."""
    source_lock_retry_s: float = 2.0
    """How often a gateway tries to become the consumer of sources another gateway holds (or
    held, until it died), and looks for new broker triggers (FN_SOURCE_LOCK_RETRY)."""
    source_reconnect_max_s: float = 10.0
    """Longest wait between two attempts to reach a broker (doubling from 0.1s, with jitter)
    (FN_SOURCE_RECONNECT_MAX)."""
