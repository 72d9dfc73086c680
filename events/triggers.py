"""Schedules and table watches: the sources that turn time and row changes into deliveries.

Schedules: every gateway runs `run_schedules`; a due schedule is fired under a row lock
(`SKIP LOCKED`) in the same transaction that stores its next tick, and its delivery is keyed by
trigger and tick, so each tick fires once however many gateways run. Missed ticks (Ember was
down) are coalesced: one delivery for the latest missed tick, whose payload says how many it
stands for; then the schedule goes on from the next future tick.

Table watches: `TableRelays` keeps one relay per watched database. A relay moves changes from the
database's outbox into deliveries (keyed by trigger and change id, so a repeated move is a
no-op) and then deletes them from the outbox.

Broker sources (NATS, Kafka, ...) fit the same mould: read a message, `Store.publish` it to a
topic, acknowledge the message once `publish` has returned (committed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from config.units import ConfigError
from events.waiting import wait_event
from store import DatabaseUnavailable, Store, Trigger
from store.outbox import WatchedDatabase

log = logging.getLogger("ember.gateway.triggers")
MAX_MISSED_COUNTED = 100
_EPSILON = dt.timedelta(microseconds=1)


def parse_schedule(cron: str, timezone: str) -> tuple[str, ZoneInfo]:
    """Check a cron expression (5 fields, or 6 with seconds) and an IANA time zone."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "--timezone", timezone, "an IANA time zone name, like UTC or Europe/Paris"
        ) from None
    cron = " ".join(cron.split())
    if len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
        raise ConfigError(
            "--cron",
            cron,
            'a cron expression like "*/5 * * * *" (minute hour day-of-month month day-of-week)',
        )
    return cron, zone


def next_tick(cron: str, zone: ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first tick strictly after `after`, in UTC."""
    value: dt.datetime = croniter(cron, after.astimezone(zone)).get_next(dt.datetime)
    return value.astimezone(dt.UTC)


def plan(trigger: Trigger, now: dt.datetime) -> tuple[dt.datetime, int, dt.datetime]:
    """For a due schedule: (the tick to fire, how many earlier ticks it stands for, the next
    tick after now). The tick fired is the latest one not after `now`; missed ticks are
    counted up to MAX_MISSED_COUNTED (a longer outage says "at least" that many) (pure)."""
    cron, timezone, tick = trigger.cron, trigger.timezone, trigger.next_fire_at
    assert cron is not None
    assert timezone is not None
    assert tick is not None
    zone = ZoneInfo(timezone)
    missed = 0
    following = next_tick(cron, zone, tick)
    while following <= now and missed < MAX_MISSED_COUNTED:
        tick, missed = following, missed + 1
        following = next_tick(cron, zone, tick)
    if following <= now:  # a very long outage: jump to the present without counting further
        last: dt.datetime = croniter(cron, (now + _EPSILON).astimezone(zone)).get_prev(dt.datetime)
        tick = last.astimezone(dt.UTC)
        following = next_tick(cron, zone, tick)
    return tick, missed, following


async def run_schedules(store: Store, wake: asyncio.Event, *, poll_s: float = 5.0) -> None:
    """Fire due schedules until cancelled; `wake` is set when triggers change."""
    while True:
        wake.clear()
        now = dt.datetime.now(dt.UTC)
        try:
            fired = await store.fire_schedules(now, functools.partial(plan, now=now))
            if fired:
                log.info("schedules fired", extra={"deliveries": len(fired)})
            nxt = await store.next_schedule_due()
        except Exception as exc:  # DatabaseUnavailable, or a query the server refused
            log.warning("cannot fire schedules, retrying: %r", exc)
            nxt = None
        timeout = poll_s
        if nxt is not None:
            timeout = min(poll_s, max((nxt - dt.datetime.now(dt.UTC)).total_seconds(), 0.0) + 0.001)
        await wait_event(wake, timeout)


class TableRelays:
    """One relay task per watched database that has table triggers."""

    def __init__(self, store: Store, *, poll_s: float = 5.0) -> None:
        self._store = store
        self._relays: dict[str, asyncio.Task[None]] = {}
        self._databases: dict[str, WatchedDatabase] = {}
        self.poll_s = poll_s

    def database(self, url: str | None) -> WatchedDatabase:
        """The watched database at `url` (None: Ember's own), connected on first use."""
        key = url or self._store.url
        found = self._databases.get(key)
        if found is None:
            found = self._databases[key] = WatchedDatabase(key)
        return found

    async def sync(self) -> None:
        """Start relays for databases that gained triggers, stop those that lost all."""
        triggers = await self._store.list_triggers()
        wanted = {t.database_url or self._store.url for t in triggers if t.kind == "table"}
        for url in wanted - self._relays.keys():
            self._relays[url] = asyncio.create_task(
                self._relay(self.database(url)), name="table relay"
            )
        for url in set(self._relays) - wanted:
            task = self._relays.pop(url)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self, wake: asyncio.Event) -> None:
        """Keep the relays in line with the triggers until cancelled."""
        try:
            while True:
                wake.clear()
                try:
                    await self.sync()
                except Exception as exc:
                    log.warning("cannot list table triggers, retrying: %r", exc)
                await wait_event(wake, self.poll_s * 6)
        finally:
            await self.close(self._relays.values())

    async def close(self, tasks: Iterable[asyncio.Task[None]] = ()) -> None:
        tasks = list(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for db in self._databases.values():
            await db.close()

    async def _relay(self, db: WatchedDatabase) -> None:
        changed = asyncio.Event()
        listener = asyncio.create_task(db.listen(changed.set), name="table change listener")
        try:
            while True:
                changed.clear()
                try:
                    await move_changes(self._store, db)
                except DatabaseUnavailable as exc:
                    log.warning("cannot relay table changes, retrying: %s", exc)
                except Exception:
                    log.exception("table relay failed; retrying")
                await wait_event(changed, self.poll_s)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


async def move_changes(store: Store, db: WatchedDatabase, *, batch: int = 500) -> int:
    """Move the outbox of `db` into deliveries; returns how many changes moved."""
    moved = 0
    while True:
        async with db.changes(batch) as changes:
            if changes:
                await store.enqueue_changes(changes)
        moved += len(changes)
        if len(changes) < batch:
            return moved
