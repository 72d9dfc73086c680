"""Retention: the tables that grow with use (activation records, succeeded deliveries, published
events' keys, build logs) lose their oldest rows, by age and beyond a count, a batch at a time.

One gateway prunes at a time: a round runs under an advisory lock (`pruning`), held on the
round's connection; another gateway that asks meanwhile gets None and skips the round. Each
batch is a statement of its own (a short transaction), so pruning never holds locks or a
snapshot for long; the caller pauses between batches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from store.base import StoreBase
from store.errors import DatabaseUnavailable
from store.queries import QUERIES

Table = Literal["activations", "deliveries", "events", "builds"]
TABLES: tuple[Table, ...] = ("activations", "deliveries", "events", "builds")

_LOST = (DatabaseUnavailable, OSError, asyncpg.InterfaceError, asyncpg.PostgresError)

RETENTION_LOCK_KEY = 0x656D626572 + 3
"""The advisory lock of the gateway that prunes ("ember" + 3)."""


@dataclass(slots=True, frozen=True)
class Cutoff:
    """Which rows of a table go this round: older than `before` (the age), or at or before
    `through` (the newest row beyond the count; None when the table is within it)."""

    before: dt.datetime
    through: dt.datetime | None


class Pruning:
    """A connection that holds the retention lock, for one round."""

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record]) -> None:
        self._conn = conn

    async def cutoff(self, table: Table, *, older_than_s: float, max_rows: int) -> Cutoff:
        """Read once per round, so that rows written during the round are not chased."""
        row = await self._conn.fetchrow(
            QUERIES[f"cutoff_{table}"], dt.timedelta(seconds=older_than_s), max_rows
        )
        assert row is not None
        return Cutoff(row["before"], row["through"])

    async def delete_batch(self, table: Table, cutoff: Cutoff, limit: int) -> int:
        """Delete up to `limit` of the oldest rows past `cutoff`; returns how many went."""
        status = await self._conn.execute(
            QUERIES[f"prune_{table}"], cutoff.before, cutoff.through, limit
        )
        return int(status.rsplit(" ", 1)[-1])


class RetentionStore(StoreBase):
    """Pruning the tables that grow."""

    @asynccontextmanager
    async def pruning(self) -> AsyncIterator[Pruning | None]:
        """A connection holding the retention lock for a round, or None when another gateway
        holds it. If the connection is lost, so is the lock (DatabaseUnavailable)."""
        async with self._conn() as conn:
            if not await conn.fetchval(QUERIES["retention_lock"], RETENTION_LOCK_KEY):
                yield None
                return
            try:
                yield Pruning(conn)
            finally:
                # A lost connection took the lock with it.
                with suppress(*_LOST):
                    await conn.execute(QUERIES["retention_unlock"], RETENTION_LOCK_KEY)
