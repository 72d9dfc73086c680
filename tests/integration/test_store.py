"""The store against a real Postgres: migrations, versions, notifications."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from store import (
    Activation,
    ActivationId,
    FunctionConfig,
    FunctionNotFound,
    NewDelivery,
    PolicyRow,
    Store,
    VersionNotFound,
    new_id,
)
from store.changes import Change, FunctionChanged, PolicyChanged
from store.queries import load_migrations

# Each runs on the usual Postgres and on the external one when set (tests/conftest.py).
pytestmark = pytest.mark.both_postgres


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url)
    await store.migrate()
    yield store
    await store.close()


async def test_migrations_apply_once_even_when_started_concurrently(database_url: str) -> None:
    stores = [await Store.connect(database_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(s.migrate() for s in stores))
        numbers = [m.number for m in load_migrations()]
        # Each migration was applied by exactly one of them.
        assert sorted(n for batch in applied for n in batch) == numbers
        assert await stores[0].migrate() == []
    finally:
        for s in stores:
            await s.close()


async def test_versions_are_numbered_and_immutable(store: Store) -> None:
    config = FunctionConfig(timeout_s=5, env={"A": "1"})
    v1 = await store.create_version("f", source="x = 1\n", filename="f.py", config=config)
    v2 = await store.create_version("f", source="x = 2\n", filename="f.py", config=config)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.sha256 != v2.sha256
    assert (await store.get_version("f")).version == 2
    assert (await store.get_version("f", 1)).source == "x = 1\n"
    assert dict((await store.get_version("f", 1)).config.env) == {"A": "1"}
    function = await store.get_function("f")
    assert (function.active_version, function.latest_version, function.version_count) == (2, 2, 2)

    assert await store.set_active_version("f") == 1
    assert (await store.get_version("f")).version == 1
    with pytest.raises(VersionNotFound):
        await store.set_active_version("f")  # nothing before version 1
    with pytest.raises(VersionNotFound):
        await store.get_version("f", 3)
    with pytest.raises(FunctionNotFound):
        await store.get_version("g")

    await store.delete_function("f")
    with pytest.raises(FunctionNotFound):
        await store.list_versions("f")
    # A new function of the same name starts again at version 1.
    again = await store.create_version("f", source="", filename="f.py", config=config)
    assert again.version == 1


async def test_changes_are_notified_and_a_lost_listener_reconnects(
    store: Store,
    database_url: str,
) -> None:
    changes: asyncio.Queue[Change] = asyncio.Queue()
    listening: asyncio.Queue[None] = asyncio.Queue()
    listener = asyncio.create_task(
        store.listen_function_changes(
            changes.put_nowait, lambda: listening.put_nowait(None), retry_s=0.05
        )
    )
    try:
        await asyncio.wait_for(listening.get(), 10)
        await store.create_version("f", source="", filename="f.py", config=FunctionConfig())
        assert await asyncio.wait_for(changes.get(), 10) == FunctionChanged("f", 1)
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
        finally:
            await admin.close()
        await asyncio.wait_for(listening.get(), 10)
        await store.set_active_version("f", 1)
        assert await asyncio.wait_for(changes.get(), 10) == FunctionChanged("f", 1)
        await store.delete_function("f")
        assert await asyncio.wait_for(changes.get(), 10) == FunctionChanged("f", 0)
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener


async def test_each_change_reaches_new_gateways_once_and_old_gateways_as_text(
    store: Store,
    database_url: str,
) -> None:
    changes: asyncio.Queue[Change] = asyncio.Queue()
    listening: asyncio.Queue[None] = asyncio.Queue()
    listener = asyncio.create_task(
        store.listen_function_changes(changes.put_nowait, lambda: listening.put_nowait(None))
    )
    old_gateway = await asyncpg.connect(database_url)  # listens as releases before JSON did
    legacy: asyncio.Queue[str] = asyncio.Queue()
    await old_gateway.add_listener("ember_functions", lambda *args: legacy.put_nowait(args[3]))
    try:
        await asyncio.wait_for(listening.get(), 10)
        await store.create_version("f", source="", filename="f.py", config=FunctionConfig())
        await store.set_policy(PolicyRow(function="f", keep_alive_s=60.0))
        assert await asyncio.wait_for(legacy.get(), 10) == "f:1"
        assert await asyncio.wait_for(legacy.get(), 10) == "policy:f"
        # A change an old gateway makes (text only) arrives too; and nothing came twice.
        await old_gateway.execute("SELECT pg_notify('ember_functions', 'f:7')")
        received = [await asyncio.wait_for(changes.get(), 10) for _ in range(3)]
        assert received == [FunctionChanged("f", 1), PolicyChanged("f"), FunctionChanged("f", 7)]
    finally:
        await old_gateway.close()
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener


async def test_the_claims_of_a_silent_gateway_are_released_and_a_live_ones_kept(
    store: Store,
) -> None:
    await store.create_version("f", source="x = 1\n", filename="f.py", config=FunctionConfig())
    silent, live = uuid.uuid4(), uuid.uuid4()
    await store.register_gateway(silent, name="a", home="host-a:/state", pid=1)
    await store.register_gateway(live, name="b", home="host-b:/state", pid=2)
    for _ in range(2):
        await store.submit(
            NewDelivery(id=new_id(), function="f", version=None, payload=b"", meta={})
        )
    [by_silent] = await store.claim(1, 600, gateway=silent)
    [by_live] = await store.claim(1, 600, gateway=live)
    assert await store.claim(10, 600, gateway=live) == []  # both leased for ten minutes

    await asyncio.sleep(0.2)  # `silent` has not beaten since it registered
    assert await store.heartbeat_gateway(live)
    assert await store.release_dead_gateways(live, 0.1) == [by_silent.id]
    assert not await store.heartbeat_gateway(silent)  # forgotten: it must register again
    [again] = await store.claim(10, 600, gateway=live)
    assert (again.id, again.redelivered) == (by_silent.id, True)

    # A restart on the same home releases its predecessor's claims at once.
    successor = uuid.uuid4()
    released = await store.register_gateway(successor, name="b", home="host-b:/state", pid=3)
    assert set(released) == {by_live.id, by_silent.id}


async def test_recording_activations_again_stores_the_new_ones_and_skips_the_stored(
    store: Store,
) -> None:
    """A COPY whose commit reached Postgres but whose answer did not (the connection dropped)
    is retried (`retry_once`, or by the writer, which keeps the batch pending): the records it
    stored must not make the retry, and the records that joined the batch since, fail."""

    def record(n: int) -> Activation:
        return Activation(
            id=ActivationId(new_id()),
            function="acts",
            version=1,
            started_at=dt.datetime.now(dt.UTC),
            duration_ms=float(n),
            cold=False,
            status="success",
            http_status=200,
        )

    await store.create_version("acts", source="x = 1\n", filename="f.py", config=FunctionConfig())
    first, later = record(0), record(1)
    await store.record_activations([first])
    await store.record_activations([first, later])  # first's COPY committed, then retried
    assert [a.id for a in await store.list_activations("acts")] == [later.id, first.id]
