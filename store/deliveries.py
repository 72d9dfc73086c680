"""The durable delivery queue: async invocations submitted, claimed under a lease, finished or
released; dead letters and their redrive; table changes from an outbox turned into deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from store.base import StoreBase, retry_once
from store.outbox import Change
from store.queries import QUERIES
from store.records import ActivationId, Claimed, Delivery, NewDelivery, Outcome


class DeliveryStore(StoreBase):
    """The delivery queue."""

    async def submit(
        self,
        delivery: NewDelivery,
        *,
        notify: bool = True,
    ) -> tuple[ActivationId, bool]:
        """Commit a delivery; returns its id and whether it is new. With an idempotency key
        that the function has seen before, the first submission's id (and False).

        `notify` wakes the workers of every gateway (NOTIFY serializes commits: leave it to
        callers that cannot wake a worker themselves)."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["insert_delivery"],
                delivery.id,
                delivery.function,
                delivery.version,
                delivery.source,
                delivery.trigger_id,
                delivery.idempotency_key,
                delivery.payload,
                dict(delivery.meta),
                delivery.run_at,
                notify,
            )
            if row is not None:
                return ActivationId(row["id"]), True
            found = await conn.fetchval(
                QUERIES["find_delivery_by_key"],
                delivery.function,
                delivery.source,
                delivery.idempotency_key,
            )
        if found is None:  # the first submission was deleted (its function too): try again
            return await self.submit(delivery, notify=notify)
        return ActivationId(found), False

    async def submit_batch(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        notify: bool = True,
    ) -> list[tuple[ActivationId, bool]]:
        """`submit` for many in one statement (async invocations only: source "async")."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["insert_deliveries"],
                [d.id for d in deliveries],
                [d.function for d in deliveries],
                [d.version for d in deliveries],
                [d.source for d in deliveries],
                [d.idempotency_key for d in deliveries],
                [d.payload for d in deliveries],
                [dict(d.meta) for d in deliveries],
                notify,
            )
            assert row is not None
            inserted = set(row["ids"] or ())
            results: list[tuple[ActivationId, bool] | None] = []
            for d in deliveries:
                found = (
                    None
                    if d.id in inserted
                    else await conn.fetchval(
                        QUERIES["find_delivery_by_key"], d.function, d.source, d.idempotency_key
                    )
                )
                results.append(
                    (d.id, True)
                    if d.id in inserted
                    else (ActivationId(found), False)
                    if found is not None
                    else None
                )  # the first submission was deleted meanwhile
        return [
            r if r is not None else await self.submit(d, notify=notify)
            for r, d in zip(results, deliveries, strict=True)
        ]

    async def claim(
        self, limit: int, lease_margin_s: float, *, gateway: uuid.UUID | None = None
    ) -> list[Claimed]:
        """Take up to `limit` due deliveries (pending, or running past their lease), leased for
        their function's timeout plus `lease_margin_s`, in the name of the `gateway` run (see
        `GatewayStore`: its claims are released when it dies)."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["claim_deliveries"], limit, lease_margin_s, gateway)
        return [Claimed.from_row(r) for r in rows]

    async def finish(self, outcomes: Sequence[Outcome]) -> int:
        """Record attempts' outcomes in one statement; returns how many were still current
        (an outcome whose lease ran out and was claimed again is ignored)."""
        columns: tuple[list[Any], ...] = tuple([] for _ in range(11))
        for o in outcomes:
            for column, value in zip(
                columns,
                (
                    o.id,
                    o.claim,
                    o.status,
                    o.run_at,
                    o.http_status,
                    o.result,
                    o.result_type,
                    dict(o.error) if o.error is not None else None,
                    o.logs,
                    o.activation,
                    o.uncounted,
                ),
                strict=True,
            ):
                column.append(value)
        async with self._conn() as conn:
            status = await conn.execute(QUERIES["finish_deliveries"], *columns)
        return int(status.rsplit(" ", 1)[-1])

    async def release(self, claims: Sequence[tuple[ActivationId, int]]) -> None:
        """Give back (delivery id, claim) pairs not finished: due now, the attempt uncounted."""
        async with self._conn() as conn:
            await conn.execute(
                QUERIES["release_deliveries"], [c[0] for c in claims], [c[1] for c in claims]
            )

    @retry_once
    async def next_delivery_due_s(self) -> float | None:
        """Seconds until the next delivery is due (<= 0: now), None when none is waiting."""
        async with self._conn() as conn:
            value = await conn.fetchval(QUERIES["next_delivery_due"])
        return None if value is None else float(value)

    @retry_once
    async def get_delivery(self, delivery_id: ActivationId) -> Delivery | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_delivery"], delivery_id)
        return Delivery.from_row(row) if row is not None else None

    @retry_once
    async def list_dead(
        self, function: str | None = None, *, limit: int = 20, namespace: str | None = None
    ) -> list[Delivery]:
        """The newest dead deliveries (of `function`, of `namespace`'s functions: the limit
        counts only those)."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_dead"], function, limit, namespace)
        return [Delivery.from_row(r) for r in rows]

    async def redrive(
        self, ids: Sequence[ActivationId] = (), function: str | None = None
    ) -> list[ActivationId]:
        """Make dead deliveries (by id, or all of a function) pending again, attempts reset."""
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(QUERIES["redrive"], list(ids), function)
            await conn.execute(QUERIES["notify_deliveries"])
        return [ActivationId(r["id"]) for r in rows]

    @retry_once
    async def delivery_depth(self) -> dict[tuple[str, str], int]:
        """{(function, status): count} of pending, running and dead deliveries."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["delivery_depth"])
        return {(r["function"], r["status"]): r["n"] for r in rows}

    async def enqueue_changes(self, changes: Sequence[Change]) -> None:
        """Turn table changes from a watched database's outbox into deliveries (idempotent)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                QUERIES["enqueue_changes"],
                [c.id for c in changes],
                [c.trigger_id for c in changes],
                [c.payload for c in changes],
            )
            await conn.execute(QUERIES["notify_deliveries"])
