"""The store: Ember's only code that speaks SQL.

`Store` owns an asyncpg pool, applies the numbered migrations under an advisory lock, and offers
one method per named query in `queries.sql`. Everything it returns is a plain record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from store.base import StoreBase, retry_once
from store.errors import (
    DatabaseUnavailable,
    FunctionNotFound,
    MigrationError,
    NotFound,
    StoreError,
    TopicNotFound,
    TriggerError,
    VersionNotFound,
)
from store.outbox import Change
from store.queries import QUERIES
from store.records import (
    ACTIVATION_COLUMNS,
    NO_PACKAGE,
    Activation,
    ActivationId,
    Build,
    Claimed,
    Delivery,
    Environment,
    Event,
    Function,
    FunctionConfig,
    NewDelivery,
    Outcome,
    Package,
    PolicyRow,
    Topic,
    Trigger,
    Version,
    code_digest,
    new_id,
)

__all__ = [
    "NO_PACKAGE",
    "Activation",
    "ActivationId",
    "Build",
    "Change",
    "Claimed",
    "DatabaseUnavailable",
    "Delivery",
    "Environment",
    "Event",
    "Function",
    "FunctionConfig",
    "FunctionNotFound",
    "MigrationError",
    "NewDelivery",
    "NotFound",
    "Outcome",
    "Package",
    "PolicyRow",
    "Store",
    "StoreError",
    "Topic",
    "TopicNotFound",
    "Trigger",
    "TriggerError",
    "Version",
    "VersionNotFound",
    "new_id",
]


class Store(StoreBase):
    """Named queries over an asyncpg pool. Create with `await Store.connect(url)`."""

    # -- functions and versions -------------------------------------------------------------

    async def create_version(
        self,
        name: str,
        *,
        source: str,
        filename: str,
        config: FunctionConfig,
        package: Package = NO_PACKAGE,
    ) -> Version:
        """Store a new immutable version and make it the active one, in one transaction.
        Its sha256 covers what it runs: the code (the archive when there is one, else the
        source), the environment and the modules it preimports."""
        sha256 = code_digest(package.archive or source.encode(), package.env_hash, config.preimport)
        async with self._conn() as conn, conn.transaction():
            number = await conn.fetchval(QUERIES["create_function_or_bump"], name)
            row = await conn.fetchrow(
                QUERIES["insert_version"],
                name,
                number,
                source,
                sha256,
                filename,
                config.entry,
                dict(config.env),
                config.timeout_s,
                config.memory_bytes,
                config.concurrency,
                config.max_attempts,
                config.max_event_age_s,
                package.archive,
                package.requirements,
                package.env_hash,
                package.lock,
                list(config.preimport),
                list(package.files),
                config.network,
                config.cpus,
            )
            await conn.execute(QUERIES["set_active_version"], name, number)
            await conn.execute(QUERIES["notify_function_changed"], name, number)
        assert row is not None
        return Version.from_row(row)

    @retry_once
    async def get_function(self, name: str) -> Function:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_function"], name)
        if row is None:
            raise FunctionNotFound(name)
        return Function.from_row(row)

    @retry_once
    async def list_functions(self) -> list[Function]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_functions"])
        return [Function.from_row(r) for r in rows]

    @retry_once
    async def get_version(self, name: str, version: int | None = None) -> Version:
        """The given version of a function, or its active version when `version` is None."""
        async with self._conn() as conn:
            if version is None:
                row = await conn.fetchrow(QUERIES["get_active_version"], name)
            else:
                row = await conn.fetchrow(QUERIES["get_version"], name, version)
            if (
                row is None
                and version is not None
                and await conn.fetchval(QUERIES["function_exists"], name)
            ):
                raise VersionNotFound(name, version)
        if row is None:
            raise FunctionNotFound(name)
        return Version.from_row(row)

    @retry_once
    async def list_versions(self, name: str) -> list[tuple[Version, bool]]:
        """Every version of a function, newest first, with whether it is the active one."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_versions"], name)
        if not rows:
            raise FunctionNotFound(name)
        return [(Version.from_row(r), r["active"]) for r in rows]

    async def set_active_version(self, name: str, version: int | None = None) -> int:
        """Point the function at `version` (default: the one before the active one)."""
        async with self._conn() as conn, conn.transaction():
            active = await conn.fetchval(QUERIES["lock_function"], name)
            if active is None:
                raise FunctionNotFound(name)
            if version is None:
                version = await conn.fetchval(QUERIES["previous_version"], name)
                if version is None:
                    raise VersionNotFound(name, active - 1)
            elif await conn.fetchrow(QUERIES["get_version"], name, version) is None:
                raise VersionNotFound(name, version)
            await conn.execute(QUERIES["set_active_version"], name, version)
            await conn.execute(QUERIES["notify_function_changed"], name, version)
        return version

    async def delete_function(self, name: str) -> None:
        """Delete a function with its versions, activation records and policy."""
        async with self._conn() as conn, conn.transaction():
            if await conn.fetchval(QUERIES["delete_function"], name) is None:
                raise FunctionNotFound(name)
            await conn.execute(QUERIES["delete_activations"], name)
            await conn.execute(QUERIES["delete_function_policy"], name)
            await conn.execute(QUERIES["delete_deliveries"], name)
            await conn.execute(QUERIES["notify_function_changed"], name, 0)

    # -- activations ------------------------------------------------------------------------

    @retry_once
    async def record_activations(self, activations: Sequence[Activation]) -> None:
        async with self._conn() as conn:
            await conn.copy_records_to_table(
                "ember_activations",
                records=[a.as_row() for a in activations],
                columns=ACTIVATION_COLUMNS,
            )

    @retry_once
    async def list_activations(self, name: str, *, limit: int = 20) -> list[Activation]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_activations"], name, limit)
        return [Activation.from_row(r) for r in rows]

    @retry_once
    async def get_activation(self, activation_id: ActivationId) -> Activation | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_activation"], activation_id)
        return Activation.from_row(row) if row is not None else None

    # -- policies ---------------------------------------------------------------------------

    async def set_policy(self, policy: PolicyRow, unset: Sequence[str] = ()) -> PolicyRow:
        """Store the non-None fields of a policy override and unset the fields named in
        `unset` (they inherit again); notify every gateway."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                QUERIES["set_policy"],
                policy.function,
                policy.prewarm,
                policy.keep_alive_s,
                policy.min_warm,
                policy.max_instances,
                list(unset),
            )
            await conn.execute(QUERIES["notify_policy_changed"], policy.function)
        assert row is not None
        return PolicyRow.from_row(row)

    @retry_once
    async def list_policies(self) -> list[PolicyRow]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_policies"])
        return [PolicyRow.from_row(r) for r in rows]

    async def delete_policy(self, function: str) -> bool:
        async with self._conn() as conn, conn.transaction():
            deleted = await conn.fetchval(QUERIES["delete_policy"], function)
            await conn.execute(QUERIES["notify_policy_changed"], function)
        return deleted is not None

    # -- environments and builds ------------------------------------------------------------

    @retry_once
    async def get_environment(self, env_hash: str) -> Environment | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_environment"], env_hash)
        return Environment.from_row(row) if row is not None else None

    async def put_environment(
        self, env: Environment, archive: Path, *, chunk_bytes: int = 8 << 20
    ) -> bool:
        """Store an environment and its archive (a file, read a chunk at a time), in one
        transaction: readers never see half of one. Returns False when an environment with
        that hash was stored already (this one is then dropped)."""
        size = (await asyncio.to_thread(archive.stat)).st_size
        async with self._conn() as conn, conn.transaction():
            created = await conn.fetchval(
                QUERIES["insert_environment"],
                env.hash,
                env.requirements,
                env.lock,
                env.python,
                size,
                env.unpacked_bytes,
                -(-size // chunk_bytes),
                env.build_s,
            )
            if created is None:
                return False
            with archive.open("rb") as f:
                seq = 0
                while chunk := await asyncio.to_thread(f.read, chunk_bytes):
                    await conn.execute(QUERIES["insert_environment_chunk"], env.hash, seq, chunk)
                    seq += 1
        return True

    async def environment_chunks(self, env: Environment) -> AsyncIterator[bytes]:
        """The archive of an environment, a chunk at a time (one query each: a large
        environment is never held in memory whole)."""
        for seq in range(env.chunks):
            async with self._conn() as conn:
                data = await conn.fetchval(QUERIES["get_environment_chunk"], env.hash, seq)
            if data is None:
                raise StoreError(f"environment {env.hash[:12]} is missing chunk {seq}")
            yield data

    async def record_build(
        self, function: str, env_hash: str, status: str, log: str, duration_s: float
    ) -> Build:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["insert_build"], function, env_hash, status, log, duration_s
            )
        assert row is not None
        return Build.from_row(row)

    @retry_once
    async def list_builds(self, function: str, *, limit: int = 5) -> list[Build]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_builds"], function, limit)
        return [Build.from_row(r) for r in rows]

    # -- async invocations and deliveries ---------------------------------------------------

    async def submit(
        self,
        delivery: NewDelivery,
        *,
        notify: bool = True,
    ) -> tuple[ActivationId, bool]:
        """Commit a delivery; returns its id and whether it is new. With an idempotency key
        that the function has seen before, the first submission's id (and False).

        `notify` wakes the workers of every gateway (NOTIFY serializes commits: leave it to
        callers that cannot wake a worker themselves)."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["insert_delivery"],
                delivery.id,
                delivery.function,
                delivery.version,
                delivery.source,
                delivery.trigger_id,
                delivery.idempotency_key,
                delivery.payload,
                dict(delivery.meta),
                delivery.run_at,
                notify,
            )
            if row is not None:
                return ActivationId(row["id"]), True
            found = await conn.fetchval(
                QUERIES["find_delivery_by_key"],
                delivery.function,
                delivery.source,
                delivery.idempotency_key,
            )
        if found is None:  # the first submission was deleted (its function too): try again
            return await self.submit(delivery, notify=notify)
        return ActivationId(found), False

    async def submit_batch(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        notify: bool = True,
    ) -> list[tuple[ActivationId, bool]]:
        """`submit` for many in one statement (async invocations only: source "async")."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["insert_deliveries"],
                [d.id for d in deliveries],
                [d.function for d in deliveries],
                [d.version for d in deliveries],
                [d.source for d in deliveries],
                [d.idempotency_key for d in deliveries],
                [d.payload for d in deliveries],
                [dict(d.meta) for d in deliveries],
                notify,
            )
            assert row is not None
            inserted = set(row["ids"] or ())
            results: list[tuple[ActivationId, bool] | None] = []
            for d in deliveries:
                found = (
                    None
                    if d.id in inserted
                    else await conn.fetchval(
                        QUERIES["find_delivery_by_key"], d.function, d.source, d.idempotency_key
                    )
                )
                results.append(
                    (d.id, True)
                    if d.id in inserted
                    else (ActivationId(found), False)
                    if found is not None
                    else None
                )  # the first submission was deleted meanwhile
        return [
            r if r is not None else await self.submit(d, notify=notify)
            for r, d in zip(results, deliveries, strict=True)
        ]

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

    async def claim(self, limit: int, lease_margin_s: float) -> list[Claimed]:
        """Take up to `limit` due deliveries (pending, or running past their lease), leased for
        their function's timeout plus `lease_margin_s`."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["claim_deliveries"], limit, lease_margin_s)
        return [Claimed.from_row(r) for r in rows]

    async def finish(self, outcomes: Sequence[Outcome]) -> int:
        """Record attempts' outcomes in one statement; returns how many were still current
        (an outcome whose lease ran out and was claimed again is ignored)."""
        columns: tuple[list[Any], ...] = tuple([] for _ in range(11))
        for o in outcomes:
            for column, value in zip(
                columns,
                (
                    o.id,
                    o.claim,
                    o.status,
                    o.run_at,
                    o.http_status,
                    o.result,
                    o.result_type,
                    dict(o.error) if o.error is not None else None,
                    o.logs,
                    o.activation,
                    o.uncounted,
                ),
                strict=True,
            ):
                column.append(value)
        async with self._conn() as conn:
            status = await conn.execute(QUERIES["finish_deliveries"], *columns)
        return int(status.rsplit(" ", 1)[-1])

    async def release(self, claims: Sequence[tuple[ActivationId, int]]) -> None:
        """Give back (delivery id, claim) pairs not finished: due now, the attempt uncounted."""
        async with self._conn() as conn:
            await conn.execute(
                QUERIES["release_deliveries"], [c[0] for c in claims], [c[1] for c in claims]
            )

    @retry_once
    async def next_delivery_due_s(self) -> float | None:
        """Seconds until the next delivery is due (<= 0: now), None when none is waiting."""
        async with self._conn() as conn:
            value = await conn.fetchval(QUERIES["next_delivery_due"])
        return None if value is None else float(value)

    @retry_once
    async def get_delivery(self, delivery_id: ActivationId) -> Delivery | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_delivery"], delivery_id)
        return Delivery.from_row(row) if row is not None else None

    @retry_once
    async def list_dead(self, function: str | None = None, *, limit: int = 20) -> list[Delivery]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_dead"], function, limit)
        return [Delivery.from_row(r) for r in rows]

    async def redrive(
        self, ids: Sequence[ActivationId] = (), function: str | None = None
    ) -> list[ActivationId]:
        """Make dead deliveries (by id, or all of a function) pending again, attempts reset."""
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(QUERIES["redrive"], list(ids), function)
            await conn.execute(QUERIES["notify_deliveries"])
        return [ActivationId(r["id"]) for r in rows]

    @retry_once
    async def delivery_depth(self) -> dict[tuple[str, str], int]:
        """{(function, status): count} of pending, running and dead deliveries."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["delivery_depth"])
        return {(r["function"], r["status"]): r["n"] for r in rows}

    async def prune_deliveries(self, older_than_s: float) -> int:
        """Forget succeeded deliveries, and published events' idempotency keys, older than
        `older_than_s`; returns how many deliveries went."""
        age = dt.timedelta(seconds=older_than_s)
        async with self._conn() as conn:
            status = await conn.execute(QUERIES["prune_deliveries"], age)
            await conn.execute(QUERIES["prune_events"], age)
        return int(status.rsplit(" ", 1)[-1])

    async def enqueue_changes(self, changes: Sequence[Change]) -> None:
        """Turn table changes from a watched database's outbox into deliveries (idempotent)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                QUERIES["enqueue_changes"],
                [c.id for c in changes],
                [c.trigger_id for c in changes],
                [c.payload for c in changes],
            )
            await conn.execute(QUERIES["notify_deliveries"])

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
