"""The store: Ember's only code that speaks SQL.

`Store` owns an asyncpg pool, applies the numbered migrations under an advisory lock, and offers
one method per named query in `queries.sql`. Everything it returns is a plain record.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from store.errors import (
    DatabaseUnavailable,
    FunctionNotFound,
    MigrationError,
    StoreError,
    VersionNotFound,
)
from store.queries import QUERIES, load_migrations
from store.records import (
    ACTIVATION_COLUMNS,
    Activation,
    ActivationId,
    Function,
    FunctionConfig,
    PolicyRow,
    Version,
)

__all__ = [
    "Activation",
    "ActivationId",
    "DatabaseUnavailable",
    "Function",
    "FunctionConfig",
    "FunctionNotFound",
    "MigrationError",
    "PolicyRow",
    "Store",
    "StoreError",
    "Version",
    "VersionNotFound",
]

log = logging.getLogger("ember.store")

# Any constant unique to Ember: serializes migrations when several replicas start at once.
MIGRATION_LOCK_KEY = 0x656D626572  # "ember"
NOTIFY_CHANNEL = "ember_functions"
_UNAVAILABLE = (OSError, asyncpg.exceptions.ConnectionDoesNotExistError,
                asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.InterfaceError)


P = ParamSpec("P")
T = TypeVar("T")


def _retry_once(
    method: Callable[Concatenate[Store, P], Awaitable[T]],
) -> Callable[Concatenate[Store, P], Awaitable[T]]:
    """For reads (and idempotent writes): after a lost connection (a database restart leaves
    every pooled connection dead), expire the pool's connections and try once more."""

    @functools.wraps(method)
    async def wrapper(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
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
        "jsonb", encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]), schema="pg_catalog", format="binary",
    )


class Store:
    """Named queries over an asyncpg pool. Create with `await Store.connect(url)`."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url = url

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> Store:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, init=_init_connection
            )
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
        assert pool is not None
        return cls(pool, url)

    async def close(self) -> None:
        await self._pool.close()

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

    # -- functions and versions -------------------------------------------------------------

    async def create_version(
        self, name: str, *, source: str, filename: str, config: FunctionConfig
    ) -> Version:
        """Store a new immutable version and make it the active one, in one transaction."""
        sha256 = hashlib.sha256(source.encode()).hexdigest()
        async with self._conn() as conn, conn.transaction():
            number = await conn.fetchval(QUERIES["create_function_or_bump"], name)
            row = await conn.fetchrow(
                QUERIES["insert_version"], name, number, source, sha256, filename,
                config.entry, dict(config.env), config.timeout_s, config.memory_bytes,
                config.concurrency,
            )
            await conn.execute(QUERIES["set_active_version"], name, number)
            await conn.execute(QUERIES["notify_function_changed"], name, number)
        assert row is not None
        return Version.from_row(row)

    @_retry_once
    async def get_function(self, name: str) -> Function:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_function"], name)
        if row is None:
            raise FunctionNotFound(name)
        return Function.from_row(row)

    @_retry_once
    async def list_functions(self) -> list[Function]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_functions"])
        return [Function.from_row(r) for r in rows]

    @_retry_once
    async def get_version(self, name: str, version: int | None = None) -> Version:
        """The given version of a function, or its active version when `version` is None."""
        async with self._conn() as conn:
            if version is None:
                row = await conn.fetchrow(QUERIES["get_active_version"], name)
            else:
                row = await conn.fetchrow(QUERIES["get_version"], name, version)
            if row is None and version is not None \
                    and await conn.fetchval(QUERIES["function_exists"], name):
                raise VersionNotFound(name, version)
        if row is None:
            raise FunctionNotFound(name)
        return Version.from_row(row)

    @_retry_once
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
            await conn.execute(QUERIES["notify_function_changed"], name, 0)

    # -- activations ------------------------------------------------------------------------

    @_retry_once
    async def record_activations(self, activations: Sequence[Activation]) -> None:
        async with self._conn() as conn:
            await conn.copy_records_to_table(
                "ember_activations", records=[a.as_row() for a in activations],
                columns=ACTIVATION_COLUMNS,
            )

    @_retry_once
    async def list_activations(self, name: str, *, limit: int = 20) -> list[Activation]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_activations"], name, limit)
        return [Activation.from_row(r) for r in rows]

    @_retry_once
    async def get_activation(self, activation_id: ActivationId) -> Activation | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_activation"], activation_id)
        return Activation.from_row(row) if row is not None else None

    @_retry_once
    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval(QUERIES["ping"])

    # -- policies ---------------------------------------------------------------------------

    async def set_policy(self, policy: PolicyRow) -> PolicyRow:
        """Store the non-None fields of a policy override; notify every gateway."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                QUERIES["set_policy"], policy.function, policy.prewarm, policy.keep_alive_s,
                policy.min_warm, policy.max_instances)
            await conn.execute(QUERIES["notify_policy_changed"], policy.function)
        assert row is not None
        return PolicyRow.from_row(row)

    @_retry_once
    async def list_policies(self) -> list[PolicyRow]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_policies"])
        return [PolicyRow.from_row(r) for r in rows]

    async def delete_policy(self, function: str) -> bool:
        async with self._conn() as conn, conn.transaction():
            deleted = await conn.fetchval(QUERIES["delete_policy"], function)
            await conn.execute(QUERIES["notify_policy_changed"], function)
        return deleted is not None

    # -- change notifications ---------------------------------------------------------------

    async def listen_function_changes(
        self, on_change: Callable[[str], Any], on_listening: Callable[[], Any],
        *, retry_s: float = 1.0,
    ) -> None:
        """Call `on_change(payload)` on every deploy, rollback or delete ("name:version", version
        0 for a delete) and policy change ("policy:name"); runs until cancelled.

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
                await conn.add_listener(NOTIFY_CHANNEL, lambda _c, _pid, _ch, name: on_change(name))
                on_listening()
                await lost.wait()
                log.warning("lost the change-notification connection; reconnecting")
            finally:
                await conn.close(timeout=1)
