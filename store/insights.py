"""What the dashboard and `fn logs` read of the activation records: the ones since a time,
counts and latency over time per function, a summary of every function, and the arrivals that
make a function's own trace for the policy simulator."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from store.base import StoreBase, retry_once
from store.queries import QUERIES
from store.records import Activation


@dataclass(slots=True, frozen=True, kw_only=True)
class CallStats:
    """Calls in a span (a bucket of a series, or a whole window): counts and latency."""

    function: str
    at: dt.datetime | None
    calls: int
    errors: int
    cold: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def from_row(cls, row: Any, function: str | None = None) -> CallStats:
        return cls(
            function=function or row["function"],
            at=row.get("bucket"),
            calls=row["calls"],
            errors=row["errors"],
            cold=row["cold"],
            p50_ms=float(row["p50_ms"] or 0.0),
            p99_ms=float(row["p99_ms"] or 0.0),
        )


class InsightStore(StoreBase):
    """Reads over activation records for people: the dashboard, `fn logs --since/--follow`."""

    @retry_once
    async def list_activations_since(
        self, name: str, since: dt.datetime, *, limit: int = 100
    ) -> list[Activation]:
        """NAME's activations that started after `since`, oldest first (the newest `limit`)."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_activations_since"], name, since, limit)
        return [Activation.from_row(r) for r in rows]

    @retry_once
    async def activation_series(
        self, name: str, since: dt.datetime, *, bucket_s: int
    ) -> list[CallStats]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["activation_series"], name, since, float(bucket_s))
        return [CallStats.from_row(r, name) for r in rows]

    @retry_once
    async def activation_summary(self, since: dt.datetime) -> dict[str, CallStats]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["activation_summary"], since)
        return {r["function"]: CallStats.from_row(r) for r in rows}

    @retry_once
    async def function_activation_summary(self, name: str, since: dt.datetime) -> CallStats | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["function_activation_summary"], name, since)
        return CallStats.from_row(row) if row is not None else None

    @retry_once
    async def list_arrivals(
        self, name: str, since: dt.datetime, *, limit: int = 200_000
    ) -> list[tuple[dt.datetime, float]]:
        """(started at, duration in ms) of NAME's calls since `since`, oldest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_arrivals"], name, since, limit)
        return [(r["started_at"], float(r["duration_ms"])) for r in rows]
