"""What every area of the store shares: the asyncpg pool and its connections, the retry after a
database restart, the numbered migrations, and listening for what other processes announce
(deploys, policy and trigger changes, submitted deliveries, the scheduler leader's address).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from store.changes import Change, ChangeFeed
from store.errors import DatabaseUnavailable, MigrationError
from store.queries import QUERIES, load_migrations

log = logging.getLogger("ember.store")

# Any constant unique to Ember: serializes migrations when several replicas start at once.
MIGRATION_LOCK_KEY = 0x656D626572  # "ember"
CHANGES_CHANNEL = "ember_changes"
LEGACY_CHANGES_CHANNEL = "ember_functions"
"""Where gateways of earlier releases listen (text payloads; see store/changes.py)."""
DELIVERIES_CHANNEL = "ember_deliveries"
_UNAVAILABLE = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
)


P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="StoreBase")


def retry_once(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """For reads (and idempotent writes): after a lost connection (a database restart leaves
    every pooled connection dead), expire the pool's connections and try once more."""

    @functools.wraps(method)
    async def wrapper(store: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(store, *args, **kwargs)
        except DatabaseUnavailable:
            await store._pool.expire_connections()
            log.info("retrying %s on a new connection", method.__name__)
            return await method(store, *args, **kwargs)

    return wrapper


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary jsonb (a version byte, then the text), so COPY can write it too.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Run when a connection goes back to the pool. The default reset query (UNLISTEN, RESET
    ALL, unlock advisory locks) costs a round trip per query; Ember leaves no session state on
    pooled connections (listening uses connections of its own, the migration lock is released
    explicitly), so only an open transaction is rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class StoreBase:
    """The pool, the migrations and the notifications; each area's queries are a subclass."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url = url

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> Self:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                reset=_reset_connection,
            )
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
        assert pool is not None
        return cls(pool, url)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close the pool; connections still held after `timeout_s` are terminated."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._pool.close()
        except TimeoutError:
            log.warning("terminating database connections still in use")
            self._pool.terminate()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"lost the connection to Postgres: {exc}") from exc

    # -- migrations -------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet applied, in order, under an advisory lock.

        Returns the numbers applied by this call (empty when the schema was up to date).
        """
        applied_now = []
        async with self._conn() as conn:
            await conn.execute(QUERIES["lock_migrations"], MIGRATION_LOCK_KEY)
            try:
                await conn.execute(QUERIES["create_migrations_table"])
                done = {r["number"] for r in await conn.fetch(QUERIES["applied_migrations"])}
                for migration in load_migrations():
                    if migration.number in done:
                        continue
                    try:
                        async with conn.transaction():
                            await conn.execute(migration.sql)
                            await conn.execute(
                                QUERIES["record_migration"], migration.number, migration.name
                            )
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(
                            f"migration {migration.number:04d}_{migration.name} failed: {exc}"
                        ) from exc
                    log.info("applied migration", extra={"migration": migration.number})
                    applied_now.append(migration.number)
            finally:
                await conn.execute(QUERIES["unlock_migrations"], MIGRATION_LOCK_KEY)
        return applied_now

    @retry_once
    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval(QUERIES["ping"])

    # -- what the rest of the platform announces --------------------------------------------

    async def listen_function_changes(
        self,
        on_change: Callable[[Change], Any],
        on_listening: Callable[[], Any],
        *,
        on_deliveries: Callable[[], Any] | None = None,
        retry_s: float = 1.0,
    ) -> None:
        """Call `on_change(change)` on every deploy, rollback or delete, policy change and
        trigger change (`store.changes`), and `on_deliveries()` when deliveries were submitted;
        runs until cancelled. A payload that is no change is logged and skipped.

        `on_listening()` is called each time listening (re)starts: notifications sent while the
        connection was down (a database restart) are lost, so callers drop their caches then.
        """
        while True:
            try:
                conn = await asyncpg.connect(self.url)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                log.warning("cannot listen for function changes, retrying: %s", exc)
                await asyncio.sleep(retry_s)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                # One feed per connection: a change's twins arrive on the same one.
                changed = functools.partial(_dispatch, on_change, ChangeFeed())
                await conn.add_listener(CHANGES_CHANNEL, changed)
                await conn.add_listener(LEGACY_CHANGES_CHANNEL, changed)
                if on_deliveries is not None:
                    await conn.add_listener(DELIVERIES_CHANNEL, lambda *_: on_deliveries())
                on_listening()
                await lost.wait()
                log.warning("lost the change-notification connection; reconnecting")
            finally:
                await conn.close(timeout=1)

    @retry_once
    async def scheduler_address(self) -> str | None:
        """Where the scheduler leader listens (Kubernetes), or None before one was elected."""
        async with self._conn() as conn:
            value: str | None = await conn.fetchval(QUERIES["scheduler_address"])
        return value


def _dispatch(
    on_change: Callable[[Change], Any],
    feed: ChangeFeed,
    _conn: Any,
    sender_pid: int,
    _channel: str,
    payload: object,
) -> None:
    try:
        change = feed.feed(sender_pid, str(payload))
    except ValueError as exc:
        log.warning("ignored a change notification: %s", exc)
        return
    if change is not None:
        on_change(change)
