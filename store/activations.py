"""Activation records: one row per call, written in batches by COPY."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from store.base import StoreBase, retry_once
from store.queries import QUERIES
from store.records import ACTIVATION_COLUMNS, Activation, ActivationId


class ActivationStore(StoreBase):
    """Activation records."""

    @retry_once
    async def record_activations(self, activations: Sequence[Activation]) -> None:
        """One COPY; if some of the records are stored already (a COPY that committed but
        whose answer was lost, tried again), the others are written and those skipped."""
        try:
            async with self._conn() as conn:
                await conn.copy_records_to_table(
                    "ember_activations",
                    records=[a.as_row() for a in activations],
                    columns=ACTIVATION_COLUMNS,
                )
        except asyncpg.UniqueViolationError:
            await self.restore_activations(activations)

    @retry_once
    async def restore_activations(self, activations: Sequence[Activation]) -> int:
        """Write records that may already be stored (replayed after a crash): those present
        are skipped. Returns how many were new."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute(QUERIES["create_restored_activations"])
            await conn.copy_records_to_table(
                "ember_restored_activations",
                records=[a.as_row() for a in activations],
                columns=ACTIVATION_COLUMNS,
            )
            status = await conn.execute(QUERIES["insert_restored_activations"])
        return int(status.rsplit(" ", 1)[-1])

    @retry_once
    async def list_activations(self, name: str, *, limit: int = 20) -> list[Activation]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_activations"], name, limit)
        return [Activation.from_row(r) for r in rows]

    @retry_once
    async def get_activation(self, activation_id: ActivationId) -> Activation | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_activation"], activation_id)
        return Activation.from_row(row) if row is not None else None
