"""Topics and what feeds the delivery queue from them: events published and fanned out to
subscribers, triggers (topic, cron, table), and cron schedules fired once per tick."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

import asyncpg
import orjson

from store.base import StoreBase, retry_once
from store.errors import FunctionNotFound, NotFound, TopicNotFound, TriggerError
from store.queries import QUERIES
from store.records import ActivationId, Event, Topic, Trigger, new_id


class EventStore(StoreBase):
    """Topics, events, triggers and schedules."""

    # -- events -----------------------------------------------------------------------------

    async def publish(
        self,
        event: Event,
        idempotency_key: str,
        *,
        notify: bool = True,
    ) -> tuple[uuid.UUID, int, bool]:
        """Commit an event once per idempotency key: returns the event id, the number of
        deliveries and whether it is new (False: the key was used before, and the first
        event's id and deliveries come back). Raises TopicNotFound."""
        async with self._conn() as conn, conn.transaction():
            created = await conn.fetchval(
                QUERIES["insert_event"], event.id, event.topic, idempotency_key, 0
            )
            if created is None:
                row = await conn.fetchrow(
                    QUERIES["find_event_by_key"], event.topic, idempotency_key
                )
                assert row is not None
                return row["id"], row["deliveries"], False
            row = await conn.fetchrow(
                QUERIES["fan_out_events"],
                [event.id],
                [event.topic],
                [event.payload],
                [event.content_type],
                notify,
            )
            assert row is not None
            if row["missing"]:
                raise TopicNotFound(event.topic)
            deliveries = row["deliveries"][0] if row["deliveries"] else 0
            await conn.execute(QUERIES["set_event_deliveries"], event.id, deliveries)
        return event.id, deliveries, True

    async def publish_batch(
        self,
        events: Sequence[Event],
        *,
        notify: bool = True,
    ) -> dict[uuid.UUID, int]:
        """Commit a batch of events, all or nothing, in one statement. Returns the number of
        deliveries per event id; raises TopicNotFound for the first topic that does not exist
        (and then nothing is published)."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["fan_out_events"],
                [e.id for e in events],
                [e.topic for e in events],
                [e.payload for e in events],
                [e.content_type for e in events],
                notify,
            )
        assert row is not None
        if row["missing"]:
            raise TopicNotFound(row["missing"][0])
        counts = dict(zip(row["event_ids"] or (), row["deliveries"] or (), strict=True))
        return {e.id: counts.get(e.id, 0) for e in events}

    # -- topics and triggers ----------------------------------------------------------------

    async def create_topic(self, name: str) -> bool:
        """Create a topic; False when it already existed."""
        async with self._conn() as conn:
            return await conn.fetchval(QUERIES["create_topic"], name) is not None

    @retry_once
    async def list_topics(self) -> list[Topic]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_topics"])
        return [Topic.from_row(r) for r in rows]

    async def delete_topic(self, name: str) -> None:
        """Raises TopicNotFound, or TriggerError while functions subscribe to it."""
        try:
            async with self._conn() as conn:
                deleted = await conn.fetchval(QUERIES["delete_topic"], name)
        except asyncpg.ForeignKeyViolationError:
            raise TriggerError(
                f'topic "{name}" has subscribers; remove them first (fn trigger list)'
            ) from None
        if deleted is None:
            raise TopicNotFound(name)

    async def add_trigger(self, trigger: Trigger) -> Trigger:
        """Store a trigger (its id is assigned here). Raises FunctionNotFound, TopicNotFound,
        or TriggerError when the function already subscribes to the topic."""
        try:
            async with self._conn() as conn, conn.transaction():
                if not await conn.fetchval(QUERIES["function_exists"], trigger.function):
                    raise FunctionNotFound(trigger.function)
                if trigger.topic is not None and not await conn.fetchval(
                    QUERIES["topic_exists"], trigger.topic
                ):
                    raise TopicNotFound(trigger.topic)
                row = await conn.fetchrow(
                    QUERIES["insert_trigger"],
                    trigger.function,
                    trigger.kind,
                    trigger.topic,
                    trigger.cron,
                    trigger.timezone,
                    trigger.next_fire_at,
                    trigger.table_name,
                    list(trigger.operations) or None,
                    trigger.database_url,
                )
                await conn.execute(QUERIES["notify_triggers_changed"], trigger.kind)
        except asyncpg.UniqueViolationError:
            raise TriggerError(
                f'function "{trigger.function}" already subscribes to topic "{trigger.topic}"'
            ) from None
        assert row is not None
        return Trigger.from_row(row)

    @retry_once
    async def list_triggers(self, function: str | None = None) -> list[Trigger]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_triggers"], function)
        return [Trigger.from_row(r) for r in rows]

    @retry_once
    async def get_trigger(self, trigger_id: int) -> Trigger:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_trigger"], trigger_id)
        if row is None:
            raise NotFound(f"trigger {trigger_id} not found; list them with: fn trigger list")
        return Trigger.from_row(row)

    async def set_trigger_table(self, trigger_id: int, table: str) -> None:
        """Record the table a trigger was installed on, as the database names it."""
        async with self._conn() as conn:
            await conn.execute(QUERIES["set_trigger_table"], trigger_id, table)

    async def delete_trigger(self, trigger_id: int) -> Trigger:
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["delete_trigger"], trigger_id)
            if row is None:
                raise NotFound(f"trigger {trigger_id} not found; list them with: fn trigger list")
            await conn.execute(QUERIES["notify_triggers_changed"], row["kind"])
        return Trigger.from_row(row)

    async def fire_schedules(
        self,
        now: dt.datetime,
        plan: Callable[[Trigger], tuple[dt.datetime, int, dt.datetime]],
    ) -> list[ActivationId]:
        """Fire every schedule due at `now`, each tick once however many gateways try.

        `plan(trigger)` gives (the tick to fire, how many earlier ticks it stands for, the next
        tick). The due rows are locked (SKIP LOCKED: another gateway takes the others), the
        delivery is keyed by trigger and tick, and the next tick is stored in the same
        transaction."""
        fired = []
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(QUERIES["due_schedules"], now)
            for row in rows:
                trigger = Trigger(
                    id=row["id"],
                    function=row["function"],
                    kind="cron",
                    cron=row["cron"],
                    timezone=row["timezone"],
                    next_fire_at=row["next_fire_at"],
                )
                tick, missed, next_tick = plan(trigger)
                payload = orjson.dumps(
                    {
                        "trigger": trigger.id,
                        "cron": trigger.cron,
                        "timezone": trigger.timezone,
                        "scheduled_at": tick.isoformat(),
                        "missed": missed,
                    }
                )
                found = await conn.fetchrow(
                    QUERIES["insert_delivery"],
                    new_id(),
                    trigger.function,
                    None,
                    "cron",
                    trigger.id,
                    f"cron:{trigger.id}:{tick.isoformat()}",
                    payload,
                    {"content_type": "application/json"},
                    None,
                    True,
                )
                if found is not None:
                    fired.append(ActivationId(found["id"]))
                await conn.execute(QUERIES["set_next_fire"], trigger.id, next_tick)
        return fired

    @retry_once
    async def next_schedule_due(self) -> dt.datetime | None:
        async with self._conn() as conn:
            value: dt.datetime | None = await conn.fetchval(QUERIES["next_schedule_due"])
        return value
