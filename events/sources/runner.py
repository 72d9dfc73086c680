"""One broker source's loop: take a batch from the broker, commit it as deliveries, then
acknowledge it to the broker (at least once end to end: a crash between the commit and the
acknowledgement makes the broker give the batch again, and a message with a stable id is then
not delivered twice). Back-pressure: while the function has `source_max_backlog` deliveries of
this source waiting, nothing more is taken (the rest waits on the broker). Any error closes
the connection (what was taken and not committed goes back to the broker) and the source
reconnects after a back-off that doubles up to `source_reconnect_max_s`, with jitter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from events.settings import EventSettings
from events.sources.base import Consumer, SourceError, to_delivery
from store import Store, Trigger

log = logging.getLogger("ember.events.sources")
RECONNECT_MIN_S = 0.1
FETCH_WAIT_S = 1.0
"""How long one fetch waits for a first message (the loop then checks the backlog again)."""
LAG_EVERY_S = 5.0
BACKLOG_CHECK_S = 0.5
PAUSED_POLL_S = 0.05
"""How often a paused source (full backlog) looks again: a cheap count on an index."""


@dataclass(slots=True)
class SourceStats:
    """What `/metrics` shows of one source (`events/sources/metrics.py`)."""

    trigger: int
    function: str
    kind: str
    messages: int = 0
    """Messages committed as deliveries (a message given again and recognised not counted)."""
    duplicates: int = 0
    """Messages the broker gave again that had already been committed (by their id)."""
    reconnects: int = 0
    connected: bool = False
    paused: bool = False
    """Not taking messages: the function's backlog of this source is full."""
    lag: int | None = None


class SourceRunner:
    def __init__(
        self,
        trigger: Trigger,
        consumer: Callable[[], Consumer],
        store: Store,
        settings: EventSettings,
        *,
        wake: Callable[[], None],
        must_notify: Callable[[], bool],
    ) -> None:
        self.trigger = trigger
        self.stats = SourceStats(trigger.id, trigger.function, trigger.kind)
        self._consumer = consumer
        self._store = store
        self._settings = settings
        self._wake = wake
        self._must_notify = must_notify
        self._rng = random.Random()

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after any failure."""
        backoff_s = RECONNECT_MIN_S
        where = {"trigger": self.trigger.id, "kind": self.trigger.kind}
        while True:
            consumer: Consumer | None = None
            try:
                consumer = self._consumer()  # (opens the sealed URL: may fail, like connecting)
                await consumer.open()
                self.stats.connected = True
                log.info("consuming", extra=where)
                backoff_s = RECONNECT_MIN_S
                await self._pump(consumer)
            except asyncio.CancelledError:
                raise
            except SourceError as exc:
                log.warning("broker source failed; reconnecting: %s", exc, extra=where)
            except Exception as exc:  # the database, or a client's own error
                log.warning("broker source failed; reconnecting: %r", exc, extra=where)
            finally:
                self.stats.connected = False
                self.stats.paused = False
                if consumer is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(self._close(consumer))
            self.stats.reconnects += 1
            await asyncio.sleep(backoff_s * self._rng.uniform(0.5, 1.0))
            backoff_s = min(backoff_s * 2, self._settings.source_reconnect_max_s)

    async def _close(self, consumer: Consumer) -> None:
        try:
            async with asyncio.timeout(5):
                await consumer.close()
        except Exception as exc:
            log.debug("closing a broker connection: %r", exc)

    async def _pump(self, consumer: Consumer) -> None:
        settings, stats, trigger = self._settings, self.stats, self.trigger
        limit = settings.source_max_backlog
        lag_at = checked_at = 0.0
        waiting: int | None = None
        """The function's deliveries of this source waiting or running: counted in Postgres
        when it may be near the bound (or every BACKLOG_CHECK_S), else what was counted plus
        what this source committed since (deliveries only finish meanwhile)."""
        while True:
            now = time.monotonic()
            if now >= lag_at:
                lag_at = now + LAG_EVERY_S
                stats.lag = await consumer.lag()
            if waiting is None or waiting >= limit // 2 or now - checked_at >= BACKLOG_CHECK_S:
                waiting = await self._store.source_backlog(trigger, limit)
                checked_at = now
            room = limit - waiting
            if room <= 0:
                if not stats.paused:
                    log.info(
                        "backlog full: not taking messages",
                        extra={"trigger": trigger.id, "waiting": waiting},
                    )
                stats.paused = True
                waiting = None
                await asyncio.sleep(PAUSED_POLL_S)
                continue
            stats.paused = False
            batch = await consumer.fetch(min(room, settings.source_batch), FETCH_WAIT_S)
            if not batch:
                continue
            deliveries = [to_delivery(trigger, m) for m in batch]
            new = await self._store.enqueue_messages(
                trigger, deliveries, notify=self._must_notify()
            )
            self._wake()
            await consumer.ack(batch)
            waiting += new
            stats.messages += new
            stats.duplicates += len(batch) - new
