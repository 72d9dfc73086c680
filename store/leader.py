"""Leadership: one active scheduler at a time, held as a Postgres advisory lock.

The lock lives on a connection of its own: while the connection lives, the lock is held; if
Postgres restarts or the network drops it, the lock is gone and `lost` is set, and the holder
must stop acting (the scheduler exits, Kubernetes restarts it, and whoever gets the lock next
adopts the pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from store.errors import DatabaseUnavailable
from store.queries import QUERIES

log = logging.getLogger("ember.store.leader")

SCHEDULER_LOCK_KEY = 0x656D626572 + 7
"""The advisory lock key of the scheduler leader ("ember" + 7)."""


class Leadership:
    def __init__(self, conn: asyncpg.Connection[asyncpg.Record], check_s: float) -> None:
        self._conn = conn
        self.lost = asyncio.Event()
        conn.add_termination_listener(lambda _: self.lost.set())
        self._check = asyncio.create_task(self._keep(check_s), name="leader lock check")

    @classmethod
    async def acquire(
        cls, url: str, *, key: int = SCHEDULER_LOCK_KEY, retry_s: float = 2.0, check_s: float = 5.0
    ) -> Leadership:
        """Wait until this process holds the lock (another holder may be alive: we stand by)."""
        waited = False
        while True:
            try:
                conn = await asyncpg.connect(url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot reach Postgres for the leader lock", extra={"error": str(exc)})
                await asyncio.sleep(retry_s)
                continue
            try:
                if await conn.fetchval(QUERIES["try_leader_lock"], key):
                    return cls(conn, check_s)
            except BaseException:
                await conn.close()
                raise
            await conn.close()
            if not waited:
                log.info("another scheduler is the leader; standing by")
                waited = True
            await asyncio.sleep(retry_s)

    async def _keep(self, check_s: float) -> None:
        while not self.lost.is_set():
            await asyncio.sleep(check_s)
            try:
                async with asyncio.timeout(check_s):
                    await self._conn.fetchval(QUERIES["ping"])
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.exceptions.InterfaceError,
            ) as exc:
                log.error("lost the leader lock's connection", extra={"error": str(exc)})
                self.lost.set()

    async def advertise(self, address: str) -> None:
        """Tell gateways where the leader listens (only the lock holder calls this)."""
        await self._conn.execute(QUERIES["advertise_scheduler"], address)

    async def release(self) -> None:
        self._check.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._check
        with contextlib.suppress(
            OSError, asyncpg.PostgresError, DatabaseUnavailable, asyncpg.exceptions.InterfaceError
        ):
            await self._conn.close(timeout=5)
