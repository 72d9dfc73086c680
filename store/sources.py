"""Broker sources' part of the store: their triggers, the messages they turn into deliveries
(one per message, keyed by the broker's own id of it where there is one), the back-pressure
count, and the advisory locks that make one gateway the only consumer of each source."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from store.base import _UNAVAILABLE, StoreBase, retry_once
from store.errors import DatabaseUnavailable, FunctionNotFound
from store.queries import QUERIES
from store.records import Trigger

SOURCE_KINDS = ("nats", "rabbitmq", "redis", "mqtt", "kafka")
SOURCE_LOCK_CLASS = 0x656D62  # "emb": the first key of a source's advisory lock


@dataclass(slots=True, frozen=True, kw_only=True)
class SourceMessage:
    """One broker message as it is committed: a delivery of the trigger's function."""

    id: uuid.UUID
    payload: bytes
    key: str | None = None
    """The broker's stable id of the message (stream sequence, entry id, offset), when it has
    one: a message given again after a crash is then not delivered twice."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """What the handler's context shows (content type, headers, topic, message metadata)."""


class SourceStore(StoreBase):
    """Broker sources' triggers and messages."""

    async def add_source_trigger(
        self, function: str, kind: str, options: Mapping[str, Any], url: str | None
    ) -> Trigger:
        """Store a broker source of `function` (`url` already sealed). Raises FunctionNotFound."""
        async with self._conn() as conn, conn.transaction():
            if not await conn.fetchval(QUERIES["function_exists"], function):
                raise FunctionNotFound(function)
            row = await conn.fetchrow(
                QUERIES["insert_source_trigger"], function, kind, dict(options), url
            )
            await conn.execute(QUERIES["notify_triggers_changed"], kind)
        assert row is not None
        return Trigger.from_row(row)

    @retry_once
    async def list_source_triggers(self) -> list[Trigger]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["source_triggers"])
        return [Trigger.from_row(r) for r in rows]

    async def enqueue_messages(
        self, trigger: Trigger, messages: Sequence[SourceMessage], *, notify: bool = True
    ) -> int:
        """Commit one delivery per message, all in one statement; returns how many were new
        (a message whose key was committed before is not). Once this returns, the messages may
        be acknowledged to the broker."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["enqueue_messages"],
                trigger.id,
                trigger.kind,
                [m.id for m in messages],
                [None if m.key is None else f"{trigger.id}:{m.key}" for m in messages],
                [m.payload for m in messages],
                [dict(m.meta) for m in messages],
                notify,
            )
        assert row is not None
        return int(row["inserted"])

    async def source_backlog(self, trigger: Trigger, limit: int) -> int:
        """Deliveries of the trigger's function from its kind of source that wait or run,
        counted up to `limit`."""
        async with self._conn() as conn:
            value = await conn.fetchval(
                QUERIES["source_backlog"], trigger.function, trigger.kind, limit
            )
        return int(value)


class SourceLocks:
    """The advisory locks of the sources this gateway consumes, on a connection of its own:
    while it lives they are held; when this process dies Postgres drops them with the
    connection, and another gateway's next try takes them (`lost` is set if the connection
    goes: the holder must stop consuming)."""

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.lost = asyncio.Event()
        conn.add_termination_listener(lambda _: self.lost.set())

    @classmethod
    async def connect(cls, url: str) -> SourceLocks:
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
        return cls(conn)

    async def try_lock(self, trigger_id: int) -> bool:
        return bool(await self._fetch("try_source_lock", trigger_id))

    async def unlock(self, trigger_id: int) -> None:
        await self._fetch("release_source_lock", trigger_id)

    async def check(self, timeout_s: float) -> None:
        """Raise DatabaseUnavailable (and set `lost`) unless the connection answers."""
        async with asyncio.timeout(timeout_s):
            await self._fetch("ping", None)

    async def _fetch(self, query: str, trigger_id: int | None) -> Any:
        args = () if trigger_id is None else (SOURCE_LOCK_CLASS, trigger_id)
        try:
            async with self._lock:
                return await self._conn.fetchval(QUERIES[query], *args)
        except (*_UNAVAILABLE, TimeoutError) as exc:
            self.lost.set()
            raise DatabaseUnavailable(f"lost the source locks' connection: {exc}") from exc

    async def close(self) -> None:
        with contextlib.suppress(*_UNAVAILABLE):
            await self._conn.close(timeout=5)
