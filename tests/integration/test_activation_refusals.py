"""The activation writer against a real Postgres: a record the database refuses costs that
record, not the batch of other calls' records it was copied with (calls/activations.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from calls.activations import ActivationWriter, new_activation_id
from store import Activation, Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url)
    await store.migrate()
    yield store
    await store.close()


def _record(function: str, error: dict[str, Any] | None = None) -> Activation:
    return Activation(
        id=new_activation_id(),
        function=function,
        version=1,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=1.0,
        cold=False,
        status="error" if error else "success",
        http_status=500 if error else 200,
        error=error,
    )


async def test_a_record_the_database_refuses_costs_only_itself(store: Store) -> None:
    # jsonb holds no \u0000: an instance that forges its reply can put one in a nested value
    # or a key of its error (the gateway strips NULs from the string values only).
    writer = ActivationWriter(store)
    others = [_record("others") for _ in range(3)]
    refused = _record("forger", {"type": "E", "detail": {"k": "a\x00b"}})
    for a in [others[0], refused, *others[1:]]:
        writer.add(a)
    await writer.flush()
    assert {a.id for a in await store.list_activations("others")} == {a.id for a in others}
    assert await store.get_activation(refused.id) is None
    assert writer.dropped == 1
