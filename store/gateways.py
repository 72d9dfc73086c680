"""Gateway runs and their heartbeats: who holds which delivery claims, and who is gone.

Each gateway process registers a run (a new id each start) and beats every few seconds. Claims
name the run that made them. When a run is gone, its running deliveries fall due at once rather
than when their leases end: its successor on the same state dir knows at start (it holds the
state dir's lock, so the previous run there is dead), and any peer knows when the heartbeat
has been silent for long enough.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from store.base import StoreBase, retry_once
from store.queries import QUERIES
from store.records import ActivationId


@dataclass(slots=True, frozen=True, kw_only=True)
class GatewayHome:
    """A live gateway run that takes calls for the functions it is home to."""

    id: uuid.UUID
    name: str
    """EMBER_GATEWAY_ID: the host or pod name."""
    address: str
    """Its base URL for peers, like http://10.1.2.3:8080."""


class GatewayStore(StoreBase):
    """Gateway runs, heartbeats, and the release of dead runs' claims."""

    @retry_once
    async def register_gateway(
        self, run: uuid.UUID, *, name: str, home: str, pid: int
    ) -> list[ActivationId]:
        """Register `run` and release the claims of earlier runs on `home` (dead: the caller
        holds its lock); returns the deliveries released."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute(QUERIES["register_gateway"], run, name, home, pid)
            rows = await conn.fetch(QUERIES["release_dead_gateways"], run, home, None)
        return [ActivationId(r["id"]) for r in rows]

    @retry_once
    async def heartbeat_gateway(self, run: uuid.UUID) -> bool:
        """Note that `run` is alive; False when it was taken for dead (register it again)."""
        async with self._conn() as conn:
            status = await conn.execute(QUERIES["heartbeat_gateway"], run)
        return status != "UPDATE 0"

    @retry_once
    async def release_dead_gateways(self, run: uuid.UUID, silent_s: float) -> list[ActivationId]:
        """Forget the runs (other than `run`) silent for `silent_s` seconds and release their
        claims; returns the deliveries released."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["release_dead_gateways"], run, None, silent_s)
        return [ActivationId(r["id"]) for r in rows]

    @retry_once
    async def deregister_gateway(self, run: uuid.UUID) -> None:
        async with self._conn() as conn:
            await conn.execute(QUERIES["deregister_gateway"], run)

    @retry_once
    async def advertise_gateway(self, run: uuid.UUID, address: str | None) -> bool:
        """Note where `run` takes calls from its peers (None: nowhere); False when the run is
        not registered (taken for dead: its heartbeat registers it again)."""
        async with self._conn() as conn:
            status = await conn.execute(QUERIES["advertise_gateway"], run, address)
        return status != "UPDATE 0"

    @retry_once
    async def list_gateway_homes(self, silent_s: float) -> list[GatewayHome]:
        """The runs with an address that beat within `silent_s` seconds, by id."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_gateway_homes"], silent_s)
        return [GatewayHome(id=r["id"], name=r["name"], address=r["address"]) for r in rows]
