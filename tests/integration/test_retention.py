"""Retention against a real Postgres: old rows and rows beyond the count go, recent ones stay, a
bounded batch at a time, one gateway at a time, counted in ember_pruned_rows_total."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, Counter

from gateway.retention import Pruner, RetentionSettings
from store import Store
from tests.conftest import PlatformFactory

pytestmark = pytest.mark.both_postgres

DAY_S = 86400.0

# Each inserts one row per age in $1 (seconds before now).
INSERT = {
    "ember_activations": """
        INSERT INTO ember_activations (id, function, version, started_at, duration_ms, cold,
                                       status, http_status)
        SELECT gen_random_uuid(), 'f', 1, now() - make_interval(secs => a), 1, false, 'ok', 200
        FROM unnest($1::float8[]) AS a""",
    "ember_deliveries": """
        INSERT INTO ember_deliveries (id, function, source, payload, status, finished_at)
        SELECT gen_random_uuid(), 'f', 'async', '', $2, now() - make_interval(secs => a)
        FROM unnest($1::float8[]) AS a""",
    "ember_events": """
        INSERT INTO ember_events (id, topic, idempotency_key, deliveries, created_at)
        SELECT gen_random_uuid(), 't', gen_random_uuid()::text, 1, now() - make_interval(secs => a)
        FROM unnest($1::float8[]) AS a""",
    "ember_builds": """
        INSERT INTO ember_builds (function, env_hash, status, log, duration_s, created_at)
        SELECT 'f', 'h', 'succeeded', 'Successfully installed', 1,
               now() - make_interval(secs => a)
        FROM unnest($1::float8[]) AS a""",
}
# How old each table's remaining rows are, in seconds, oldest first.
AGES = {
    "ember_activations": "SELECT extract(epoch FROM now() - started_at) FROM ember_activations",
    "ember_deliveries": "SELECT extract(epoch FROM now() - finished_at) FROM ember_deliveries "
    "WHERE status = 'succeeded'",
    "ember_events": "SELECT extract(epoch FROM now() - created_at) FROM ember_events",
    "ember_builds": "SELECT extract(epoch FROM now() - created_at) FROM ember_builds",
}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url)
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
async def db(store: Store, database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def insert(db: asyncpg.Connection, table: str, ages_s: Sequence[float], *extra: str) -> None:
    await db.execute(INSERT[table], list(ages_s), *extra)


async def ages_left(db: asyncpg.Connection, table: str) -> list[float]:
    return sorted((float(r[0]) for r in await db.fetch(AGES[table])), reverse=True)


def pruner(
    store: Store,
    registry: CollectorRegistry,
    *,
    delivery_age_s: float = 7 * DAY_S,
    max_rows: int = 1_000_000,
    batch_rows: int = 5000,
) -> Pruner:
    counter = Counter("ember_pruned_rows", "rows pruned", ["table"], registry=registry)
    settings = RetentionSettings(max_rows=max_rows, batch_rows=batch_rows, pause_s=0.001)
    return Pruner(store, settings, delivery_age_s=delivery_age_s, pruned_rows=counter)


async def test_rows_older_than_their_age_go_and_recent_ones_stay(
    store: Store, db: asyncpg.Connection
) -> None:
    await insert(db, "ember_activations", [10 * DAY_S, 8 * DAY_S, 6 * DAY_S, DAY_S, 60])
    await insert(db, "ember_deliveries", [3 * DAY_S, 0.5 * DAY_S], "succeeded")
    # Work not done yet and dead letters are not the pruner's, however old.
    await insert(db, "ember_deliveries", [30 * DAY_S], "pending")
    await insert(db, "ember_deliveries", [30 * DAY_S], "dead")
    await insert(db, "ember_events", [3 * DAY_S, 0.5 * DAY_S])
    await insert(db, "ember_builds", [8 * DAY_S, DAY_S])

    registry = CollectorRegistry()
    done = await pruner(store, registry, delivery_age_s=DAY_S).prune_once()

    assert done == {"activations": [2], "deliveries": [1], "events": [1], "builds": [1]}
    assert [round(a / DAY_S) for a in await ages_left(db, "ember_activations")] == [6, 1, 0]
    assert [round(a / DAY_S, 1) for a in await ages_left(db, "ember_deliveries")] == [0.5]
    assert await db.fetchval("SELECT count(*) FROM ember_deliveries") == 3
    assert [round(a / DAY_S, 1) for a in await ages_left(db, "ember_events")] == [0.5]
    assert [round(a / DAY_S) for a in await ages_left(db, "ember_builds")] == [1]
    for table, n in done.items():
        assert registry.get_sample_value("ember_pruned_rows_total", {"table": table}) == sum(n)


async def test_rows_beyond_the_count_go_oldest_first_in_bounded_batches(
    store: Store, db: asyncpg.Connection
) -> None:
    minutes = [60.0 * m for m in range(1, 34)]  # 33 rows, all younger than the age
    await insert(db, "ember_activations", minutes)
    await insert(db, "ember_deliveries", minutes[:12], "succeeded")
    registry = CollectorRegistry()
    prune = pruner(store, registry, max_rows=10, batch_rows=4)

    done = await prune.prune_once()

    assert done is not None
    assert done["activations"] == [4, 4, 4, 4, 4, 3]
    assert done["deliveries"] == [2]
    assert [round(a / 60) for a in await ages_left(db, "ember_activations")] == list(
        range(10, 0, -1)
    )
    assert [round(a / 60) for a in await ages_left(db, "ember_deliveries")] == list(
        range(10, 0, -1)
    )
    value = registry.get_sample_value
    assert value("ember_pruned_rows_total", {"table": "activations"}) == 23
    assert value("ember_pruned_rows_total", {"table": "deliveries"}) == 2
    # Within the count and the age: the next round deletes nothing.
    assert await prune.prune_once() == {
        "activations": [],
        "deliveries": [],
        "events": [],
        "builds": [],
    }


async def test_one_gateway_prunes_at_a_time(
    store: Store, db: asyncpg.Connection, database_url: str
) -> None:
    await insert(db, "ember_activations", [8 * DAY_S])
    other = await Store.connect(database_url)
    try:
        async with other.pruning() as pruning:
            assert pruning is not None
            assert await pruner(store, CollectorRegistry()).prune_once() is None
        assert len(await ages_left(db, "ember_activations")) == 1
        # Released at the end of the round: the next round prunes.
        done = await pruner(store, CollectorRegistry()).prune_once()
        assert done is not None
        assert done["activations"] == [1]
    finally:
        await other.close()


async def test_the_platform_prunes_in_the_background_and_counts_it(
    make_platform: PlatformFactory, database_url: str
) -> None:
    settings = RetentionSettings(max_rows=5, batch_rows=2, pause_s=0.001, every_s=0.05)
    async with make_platform(retention=settings) as running:
        db = await asyncpg.connect(database_url)
        try:
            await insert(db, "ember_activations", [60.0 * m for m in range(1, 9)])
            deadline = time.monotonic() + 20
            line = 'ember_pruned_rows_total{table="activations"} 3.0'
            while True:
                async with running.http.get(f"{running.url}/metrics") as response:
                    text = await response.text()
                if line in text:
                    break
                assert time.monotonic() < deadline, text
                await asyncio.sleep(0.05)
            assert len(await ages_left(db, "ember_activations")) == 5
        finally:
            await db.close()
