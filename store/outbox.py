"""Table triggers: what Ember installs in a watched database, and reading its outbox.

The watched database is the user's application database (its URL is kept by Ember as a secret)
or Ember's own. `install` adds an AFTER ROW trigger that writes each change into
`ember_outbox.changes` in the same transaction as the change; the gateway's relay moves the
outbox into Ember's delivery queue (see `Store.enqueue_changes`) and deletes what it moved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from store.errors import DatabaseUnavailable, TriggerError
from store.queries import parse_queries

log = logging.getLogger("ember.store.outbox")
SQL = parse_queries((resources.files("store") / "outbox.sql").read_text())
OPERATIONS = ("insert", "update", "delete")
NOTIFY_CHANNEL = "ember_outbox"
OUTBOX_LOCK_KEY = 0x656D626572 + 1
"""Serializes installing and removing triggers in a watched database ("ember" + 1)."""
_UNAVAILABLE = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
)


@dataclass(slots=True, frozen=True)
class Change:
    id: int
    trigger_id: int
    payload: bytes


def _trigger_name(trigger_id: int) -> str:
    return f"ember_trigger_{int(trigger_id)}"


class WatchedDatabase:
    """One watched database. `url` None means Ember's own (given as `own_url`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(self.url, min_size=0, max_size=2)
            except _UNAVAILABLE as exc:
                raise DatabaseUnavailable(f"cannot connect to the watched database: {exc}") from exc
            except asyncpg.PostgresError as exc:
                raise TriggerError(f"cannot connect to the watched database: {exc}") from exc
        assert self._pool is not None
        return self._pool

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the connections; one still held after `timeout_s` (by a task cut short)
        is terminated rather than waited for."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(timeout_s):
                    await pool.close()
            except TimeoutError:
                log.warning("terminating the watched database's connections")
                pool.terminate()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        pool = await self._get_pool()
        try:
            conn = await pool.acquire()
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"cannot connect to the watched database: {exc}") from exc
        except asyncpg.PostgresError as exc:  # wrong password, no such database, ...
            raise TriggerError(f"cannot connect to the watched database: {exc}") from None
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def install(self, trigger_id: int, table: str, operations: Sequence[str]) -> str:
        """Install the outbox (once) and a trigger on `table`; returns the table's full name.

        Raises TriggerError naming the table when it does not exist or cannot be watched."""
        ops = [op.lower() for op in operations]
        if not ops or any(op not in OPERATIONS for op in ops):
            raise TriggerError(f"--on takes {', '.join(OPERATIONS)}, got {','.join(operations)}")
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(SQL["lock"], OUTBOX_LOCK_KEY)
                try:
                    row = await conn.fetchrow(SQL["resolve_table"], table)
                except (
                    asyncpg.UndefinedTableError,
                    asyncpg.InvalidSchemaNameError,
                    asyncpg.InvalidNameError,
                ) as exc:
                    raise TriggerError(
                        f'table "{table}" does not exist in the watched database ({exc})'
                    ) from None
                assert row is not None
                qualified, kind = row[0], row[1]
                if kind not in ("r", "p"):
                    raise TriggerError(
                        f'"{table}" is not a table (views and other relations cannot be watched)'
                    )
                await conn.execute(SQL["setup"])
                events = " OR ".join(op.upper() for op in dict.fromkeys(ops))
                # Identifiers cannot be parameters: the name is quoted by Postgres (format %I)
                # and the id is an int.
                await conn.execute(
                    f"CREATE TRIGGER {_trigger_name(trigger_id)} AFTER {events} ON {qualified} "
                    f"FOR EACH ROW EXECUTE FUNCTION ember_outbox.capture('{int(trigger_id)}')"
                )
        except asyncpg.InsufficientPrivilegeError as exc:
            raise TriggerError(f'not allowed to install a trigger on "{table}": {exc}') from None
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"lost the watched database: {exc}") from exc
        return str(qualified)

    async def uninstall(self, trigger_id: int) -> None:
        """Remove the trigger (on whatever table it is now) and its pending changes; the
        outbox goes with the last trigger."""
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(SQL["lock"], OUTBOX_LOCK_KEY)
                qualified = await conn.fetchval(SQL["find_trigger"], _trigger_name(trigger_id))
                if qualified is not None:
                    await conn.execute(
                        f"DROP TRIGGER IF EXISTS {_trigger_name(trigger_id)} ON {qualified}"
                    )
                if not await conn.fetchval(SQL["has_schema"]):
                    return
                await conn.execute(SQL["remove_changes"], trigger_id)
                if await conn.fetchval(SQL["remaining_triggers"]) == 0:
                    await conn.execute(SQL["drop_schema"])
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"lost the watched database: {exc}") from exc

    @asynccontextmanager
    async def changes(self, limit: int = 500) -> AsyncIterator[list[Change]]:
        """The oldest changes, locked; they are deleted when the block exits without error."""
        try:
            async with self._connection() as conn, conn.transaction():
                if not await conn.fetchval(SQL["has_schema"]):
                    yield []
                    return
                rows = await conn.fetch(SQL["take_changes"], limit)
                batch = [Change(r["id"], r["trigger_id"], r["payload"].encode()) for r in rows]
                yield batch
                if batch:
                    await conn.execute(SQL["delete_changes"], [c.id for c in batch])
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"lost the watched database: {exc}") from exc

    async def listen(self, on_change: Callable[[], Any], *, retry_s: float = 1.0) -> None:
        """Call `on_change()` whenever a watched table changes (and once per (re)connect, for
        changes made while not listening). Runs until cancelled."""
        while True:
            try:
                conn = await asyncpg.connect(self.url)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                log.warning("cannot listen on the watched database, retrying: %s", exc)
                await asyncio.sleep(retry_s)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_: on_change())
                on_change()
                await lost.wait()
            finally:
                await conn.close(timeout=1)
