"""One gateway's part of the event system: what it submits to the delivery queue and, when it
runs workers (`EventSettings.workers`), the tasks that empty it.

Submissions (async invocations, single publishes) share statements (`GroupCommit`). A commit
must wake a worker: this gateway's own after the commit, or every gateway's with NOTIFY when
this one runs no worker or its worker is full (`must_notify`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import Any

from calls.execute import CallPath
from events import recovery
from events.batching import GroupCommit
from events.delivery import DeliveryWorker, RunCall, housekeeping
from events.recovery import GatewayRun
from events.settings import EventSettings
from events.sources import kinds
from events.sources.manager import SourceManager
from events.sources.metrics import SourceCollector
from events.sources.secrets import Cipher, seal_url
from events.triggers import TableRelays, run_schedules
from scheduler.tasks import Supervisor
from store import (
    ActivationId,
    DatabaseUnavailable,
    Event,
    NewDelivery,
    Store,
    TopicNotFound,
    Trigger,
    TriggerError,
)
from store.outbox import WatchedDatabase

log = logging.getLogger("ember.gateway.events")


class EventSystem:
    def __init__(
        self,
        store: Store,
        calls: CallPath,
        settings: EventSettings,
        run: GatewayRun | None = None,
        *,
        cipher: Cipher,
        run_call: RunCall | None = None,
    ) -> None:
        """`cipher`: seals and opens the URLs of broker triggers (the platform's secrets key);
        `run_call`: runs a delivery's attempt (default: here; the gateway's runs it at the
        function's home gateway)."""
        self.store = store
        self.settings = settings
        self.cipher = cipher
        self.run = run
        """This gateway's run: its claims carry its id (see `events/recovery.py`)."""
        self._metrics = calls.metrics
        self.deliveries = (
            DeliveryWorker(
                store, calls, settings, gateway=run.id if run else None, run_call=run_call
            )
            if settings.workers
            else None
        )
        self.relays = TableRelays(store) if settings.workers else None
        self.sources = (
            SourceManager(
                store, settings, cipher, wake=self.wake_deliveries, must_notify=self.must_notify
            )
            if settings.workers
            else None
        )
        if self.sources is not None:
            self._metrics.registry.register(SourceCollector(self.sources.stats))
        self._triggers_changed: list[asyncio.Event] = []
        self._worker: asyncio.Task[Any] | None = None
        # Concurrent async invocations and publishes share one INSERT (see GroupCommit).
        self.submitter: GroupCommit[NewDelivery, tuple[ActivationId, bool]] = GroupCommit(
            self._submit, after=self.wake_deliveries, size=lambda d: len(d.payload)
        )
        self.publisher: GroupCommit[Event, int] = GroupCommit(
            self._publish, after=self.wake_deliveries, size=lambda e: len(e.payload)
        )

    async def register(self) -> None:
        """Register this gateway's run (before `start`): the claims of the previous run on this
        state dir are released, and the worker's first claim takes them."""
        if self.run is not None:
            await recovery.register(self.store, self.run)

    async def deregister(self) -> None:
        if self.run is not None:
            await recovery.deregister(self.store, self.run)

    def start(self, tasks: Supervisor) -> None:
        """Start the workers (if this gateway runs them), each a critical task of `tasks`."""
        if self.run is not None:
            tasks.spawn(
                recovery.heartbeat(self.store, self.run, self.settings, self.wake_deliveries),
                "gateway heartbeat",
                critical=True,
            )
        if self.deliveries is None or self.relays is None or self.sources is None:
            return
        schedules_wake, tables_wake = asyncio.Event(), asyncio.Event()
        self._triggers_changed = [schedules_wake, tables_wake, self.sources.changed]
        watch = functools.partial(tasks.spawn, critical=True)
        self._worker = watch(self.deliveries.run(), "delivery worker")
        watch(self.deliveries.outcomes.run(), "delivery outcome writer")
        watch(run_schedules(self.store, schedules_wake), "schedules")
        watch(self.relays.run(tables_wake), "table relays")
        watch(housekeeping(self.store, self._metrics), "delivery housekeeping")
        watch(self.sources.run(), "broker sources")

    async def stop(self, grace_s: float) -> None:
        """Claim nothing more (a claim in flight still starts its deliveries), then let the
        claimed ones finish for up to `grace_s`. The tasks are cancelled by their owner."""
        if self.deliveries is None:
            return
        self.deliveries.stop_claiming()
        if self._worker is not None:
            await asyncio.wait([self._worker], timeout=grace_s)
        await self.deliveries.stop(grace_s)

    def must_notify(self) -> bool:
        """Whether a submission must wake every gateway's workers (NOTIFY) because this
        gateway runs none or its worker is full; otherwise `wake_deliveries` after the commit
        is enough (and NOTIFY, which serializes commits, is saved)."""
        return self.deliveries is None or self.deliveries.saturated

    def wake_deliveries(self) -> None:
        if self.deliveries is not None:
            self.deliveries.wake()

    def triggers_changed(self) -> None:
        for event in self._triggers_changed:
            event.set()

    async def _submit(
        self, batch: list[NewDelivery]
    ) -> list[tuple[ActivationId, bool] | Exception]:
        try:
            return list(await self.store.submit_batch(batch, notify=self.must_notify()))
        except DatabaseUnavailable:
            raise
        except Exception:
            if len(batch) == 1:
                raise
        # The database refused the batch: one by one, so that only the culprit fails.
        results: list[tuple[ActivationId, bool] | Exception] = []
        for item in batch:
            try:
                results.append(await self.store.submit(item, notify=self.must_notify()))
            except Exception as exc:
                results.append(exc)
        return results

    async def _publish(self, events: list[Event]) -> list[int | Exception]:
        try:
            counts = await self.store.publish_batch(events, notify=self.must_notify())
        except TopicNotFound:
            pass  # one of them named a missing topic: one by one, so only those fail
        else:
            return [counts[e.id] for e in events]
        results: list[int | Exception] = []
        for event in events:
            try:
                results.append((await self.store.publish_batch([event]))[event.id])
            except TopicNotFound as exc:
                results.append(exc)
        return results

    def watched(self, url: str | None) -> tuple[WatchedDatabase, bool]:
        """The connection to a watched database (None: Ember's own): the relays' own, or a
        temporary one (and True) when this gateway runs no relays."""
        if self.relays is not None:
            return self.relays.database(url), False
        return WatchedDatabase(url or self.store.url), True

    async def install(self, trigger: Trigger) -> Trigger:
        """Install a stored table trigger in its database; the trigger is forgotten again if
        that fails (TriggerError: the table cannot be watched)."""
        assert trigger.table_name is not None
        db, temporary = self.watched(trigger.database_url)
        try:
            qualified = await db.install(trigger.id, trigger.table_name, trigger.operations)
        except BaseException:
            await self.store.delete_trigger(trigger.id)
            raise
        finally:
            if temporary:
                await db.close()
        await self.store.set_trigger_table(trigger.id, qualified)
        return dataclasses.replace(trigger, table_name=qualified)

    async def add_source(self, wanted: kinds.Wanted) -> Trigger:
        """Prepare a broker source on its broker (see `kinds.prepare`: raises SourceError),
        then store its trigger, its URL sealed; this gateway's sources start at once. Raises
        FunctionNotFound, or the cipher's error when there is no secrets key, before anything
        is made on the broker."""
        await self.store.get_function(wanted.function)
        sealed = None if wanted.url is None else seal_url(wanted.url, self.cipher)
        await kinds.prepare(wanted)
        trigger = await self.store.add_source_trigger(
            wanted.function, wanted.kind, wanted.options, sealed
        )
        self.triggers_changed()
        return trigger

    async def remove(self, trigger: Trigger, *, force: bool = False) -> None:
        """Uninstall what a table trigger installed, then forget the trigger. With `force`, a
        watched database that cannot be reached does not stop the trigger being forgotten (what
        was installed there stays: the log says so)."""
        if trigger.kind == "table":
            db, temporary = self.watched(trigger.database_url)
            try:
                await db.uninstall(trigger.id)
            except (DatabaseUnavailable, TriggerError) as exc:
                if not force:
                    raise
                log.warning(
                    "forgot a table trigger without uninstalling it: %s",
                    exc,
                    extra={"trigger": trigger.id, "table": trigger.table_name},
                )
            finally:
                if temporary:
                    await db.close()
        await self.store.delete_trigger(trigger.id)
