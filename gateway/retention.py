"""Retention: the platform's pruner. Activation records, succeeded deliveries, the keys of
published events and build logs are deleted when older than their age or beyond a count per
table, a bounded batch at a time with a pause between batches (`store/retention.py` has the
SQL and the lock that lets one gateway prune at a time). Counted in
`ember_pruned_rows_total{table}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from config.env import Env
from store import Store
from store.retention import TABLES, Table

log = logging.getLogger("ember.gateway.retention")


@dataclass(slots=True, frozen=True, kw_only=True)
class RetentionSettings:
    """What is kept of the tables that grow with use (docs/retention.md)."""

    age_s: float = 7 * 86400.0
    """Activation records and build logs older than this are deleted (FN_RETENTION, default
    7d). Succeeded deliveries and published events' keys: FN_DELIVERY_RETENTION."""
    max_rows: int = 1_000_000
    """Rows kept per table at most (FN_RETENTION_ROWS, default 1000000): the oldest beyond go
    even when younger than their age. A million activation records take about 200 MB."""
    batch_rows: int = 5000
    """Rows deleted per statement (FN_RETENTION_BATCH, default 5000): each is a short
    transaction, so pruning holds its locks and its snapshot only briefly."""
    pause_s: float = 0.1
    """Pause between batches (FN_RETENTION_PAUSE, default 100ms), the database's to others."""
    every_s: float = 300.0
    """Time between rounds (FN_RETENTION_EVERY, default 5m); the first runs at start."""


def retention_from_env(env: Mapping[str, str]) -> RetentionSettings:
    read, d = Env(env), RetentionSettings()
    return RetentionSettings(
        age_s=read.duration_s("FN_RETENTION", d.age_s, maximum_s=3650 * 86400),
        max_rows=read.at_least("FN_RETENTION_ROWS", d.max_rows, minimum=1),
        batch_rows=read.whole("FN_RETENTION_BATCH", d.batch_rows, 1, 1_000_000),
        pause_s=read.duration_s("FN_RETENTION_PAUSE", d.pause_s, maximum_s=60),
        every_s=read.duration_s("FN_RETENTION_EVERY", d.every_s, maximum_s=86400),
    )


class Pruner:
    def __init__(
        self,
        store: Store,
        settings: RetentionSettings,
        *,
        delivery_age_s: float,
        pruned_rows: Counter,
    ) -> None:
        self._store = store
        self.settings = settings
        self._pruned = {table: pruned_rows.labels(table) for table in TABLES}
        self.ages: dict[Table, float] = {
            "activations": settings.age_s,
            "deliveries": delivery_age_s,
            "events": delivery_age_s,
            "builds": settings.age_s,
        }

    async def prune_once(self) -> dict[Table, list[int]] | None:
        """One round over every table: the rows each batch deleted, per table; None when
        another gateway is pruning."""
        s = self.settings
        async with self._store.pruning() as pruning:
            if pruning is None:
                return None
            done: dict[Table, list[int]] = {}
            for table, age_s in self.ages.items():
                cutoff = await pruning.cutoff(table, older_than_s=age_s, max_rows=s.max_rows)
                batches = done[table] = []
                while True:
                    deleted = await pruning.delete_batch(table, cutoff, s.batch_rows)
                    if deleted:
                        batches.append(deleted)
                        self._pruned[table].inc(deleted)
                    if deleted < s.batch_rows:
                        break
                    await asyncio.sleep(s.pause_s)
            return done

    async def run(self) -> None:
        """A round every `every_s`, from now until cancelled; a failed round (the database
        away) is logged and the next one tries again."""
        while True:
            try:
                done = await self.prune_once()
            except Exception as exc:  # DatabaseUnavailable, or a statement the server refused
                log.warning("pruning failed, trying again in %gs: %r", self.settings.every_s, exc)
            else:
                pruned = {table: sum(b) for table, b in (done or {}).items() if b}
                if pruned:
                    log.info("pruned old rows", extra={"pruned": pruned})
            await asyncio.sleep(self.settings.every_s)
