"""Activation records, written to Postgres in batches off the request path.

A call adds its record to memory; a named background task copies batches into Postgres. While
the database is away, records wait in memory (bounded: past `max_pending` the oldest leave it,
and without a spool are dropped and counted in `ember_activations_dropped_total`). With a spool
(`calls/spool.py`), each record is also appended to a local file until it is stored, so a killed
gateway loses none, and those that left memory are written from the file once the database is
back. A record the database refuses (not for being away) is dropped alone, not its batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from calls.spool import ActivationSpool
from store import Activation, ActivationId, DatabaseUnavailable, Store, new_id

new_activation_id = new_id

log = logging.getLogger("ember.gateway.activations")

T = TypeVar("T")


class ActivationWriter:
    def __init__(
        self,
        store: Store,
        *,
        batch_delay_s: float = 0.05,
        max_batch: int = 1000,
        max_pending: int = 100_000,
        retry_s: float = 1.0,
        spool: ActivationSpool | None = None,
    ) -> None:
        self._store = store
        self._spool = spool
        self._pending: list[Activation] = []
        self._has_pending = asyncio.Event()
        self._lock = asyncio.Lock()
        self.batch_delay_s = batch_delay_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.retry_s = retry_s
        self.dropped = 0
        self._writing: list[Activation] = []

    def add(self, activation: Activation) -> None:
        if self._spool is not None:
            self._spool.append(activation)
        self._pending.append(activation)
        if len(self._pending) > self.max_pending:
            del self._pending[0]
            if self._spool is None or self._spool.failed:
                self.dropped += 1
            else:  # written from the spool once Postgres is back
                self._spool.overflowed()
        self._has_pending.set()

    async def run(self) -> None:
        while True:
            await self._has_pending.wait()
            await asyncio.sleep(self.batch_delay_s)  # gather a batch
            try:
                if self._spool is not None:
                    await asyncio.to_thread(self._spool.sync)
                await self.flush()
            except DatabaseUnavailable as exc:
                log.warning("cannot write activations, will retry: %s", exc)
                await asyncio.sleep(self.retry_s)
            except Exception:
                # Not the database being away: retrying the same batch would fail forever.
                # (flush took the batch out of pending and counted it as dropped.)
                log.exception("dropped a batch of activation records that could not be written")

    async def flush(self) -> None:
        """Write the records pending now; readers call it to see their own calls. Records that
        arrive meanwhile wait for the next round (`batch_delay_s`): chasing them one COPY at a
        time kept Postgres and the event loop busy with batches of one or two under a steady
        stream of calls."""
        async with self._lock:
            mark = self._spool.turn() if self._spool is not None else 0
            left = len(self._pending)
            while left > 0 and self._pending:
                # Taken out first: `add` may drop the oldest pending records meanwhile.
                batch = self._pending[: min(self.max_batch, left)]
                del self._pending[: len(batch)]
                left -= len(batch)
                self._writing = batch
                try:
                    await self._store.record_activations(batch)
                except (DatabaseUnavailable, asyncio.CancelledError):
                    # Retried when the database is back; or, cancelled (a stopping gateway
                    # cancels the writer, then flushes): written by that last flush. A COPY
                    # that did commit before the cancel is skipped then (`record_activations`).
                    self._pending[:0] = batch
                    raise
                except Exception:
                    if len(batch) == 1:
                        self.dropped += 1
                        raise
                    await self._record_one_by_one(batch)  # the one refused, not all
                finally:
                    self._writing = []
            if self._spool is not None:  # every record appended up to the mark is stored
                for i in await self._in_thread(self._spool.stored, mark):
                    await self._restore(await self._in_thread(self._spool.records_of, i))
                    await self._in_thread(self._spool.empty, i)
            if not self._pending:  # (else, or if that raised, the next round goes on)
                self._has_pending.clear()

    async def _in_thread(self, spooling: Callable[..., T], *args: Any) -> T:
        """Off the call path; cancelled, it waits for the thread: never alongside `turn`."""
        done = asyncio.ensure_future(asyncio.to_thread(spooling, *args))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            await done
            raise

    async def _restore(self, records: list[Activation]) -> None:
        """Records of the spool dropped from memory (and others, stored: skipped)."""
        for start in range(0, len(records), self.max_batch):
            batch = records[start : start + self.max_batch]
            try:
                await self._store.restore_activations(batch)
            except DatabaseUnavailable:
                raise
            except Exception:
                await self._record_one_by_one(batch, restore=True)

    async def _record_one_by_one(self, batch: list[Activation], *, restore: bool = False) -> None:
        """A batch the database refused, not for being away (a record it cannot hold): each
        record on its own, so the others' records copied with it are kept."""
        for i, activation in enumerate(batch):
            try:
                if restore:
                    await self._store.restore_activations([activation])
                else:
                    await self._store.record_activations([activation])
            except (DatabaseUnavailable, asyncio.CancelledError):
                if not restore:  # (restored ones are still in the spool)
                    self._pending[:0] = batch[i:]
                raise
            except Exception:
                self.dropped += 1
                log.exception(
                    "dropped an activation record the database refused",
                    extra={"activation": str(activation.id), "function": activation.function},
                )

    @property
    def backlog(self) -> int:
        """Records not yet handed to Postgres."""
        return len(self._pending)

    def pending(self, activation_id: ActivationId) -> Activation | None:
        for activation in (*self._pending, *self._writing):
            if activation.id == activation_id:
                return activation
        return None
