"""The broker sources one gateway runs: exactly one consumer per source across all gateways.

Each source is consumed by the gateway that holds its advisory lock (`store.sources.SourceLocks`,
on a connection of its own). Every `source_lock_retry_s`, and when triggers change, a gateway
starts a runner for each source whose lock it can take and stops those whose trigger is gone.
When a gateway dies its connection closes, Postgres drops its locks, and another gateway (or
the same one restarted) takes them at its next try. If the locks' connection is lost, every
runner of this gateway stops at once (another may already consume) and it starts over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from events.settings import EventSettings
from events.sources import kinds
from events.sources.runner import SourceRunner, SourceStats
from events.sources.secrets import Cipher
from events.waiting import wait_event
from store import Store, Trigger
from store.sources import SourceLocks

log = logging.getLogger("ember.events.sources")


class SourceManager:
    def __init__(
        self,
        store: Store,
        settings: EventSettings,
        cipher: Cipher,
        *,
        wake: Callable[[], None],
        must_notify: Callable[[], bool],
    ) -> None:
        self._store = store
        self._settings = settings
        self._cipher = cipher
        """Opens the triggers' sealed URLs (the platform's secrets key)."""
        self._wake = wake
        self._must_notify = must_notify
        self._runners: dict[int, tuple[SourceRunner, asyncio.Task[None]]] = {}
        self.changed = asyncio.Event()
        """Set when triggers change: look for new sources (and gone ones) now."""

    def stats(self) -> list[SourceStats]:
        """The sources this gateway consumes now."""
        return [runner.stats for runner, _ in self._runners.values()]

    async def run(self) -> None:
        """Hold and consume sources until cancelled."""
        while True:
            locks: SourceLocks | None = None
            try:
                locks = await SourceLocks.connect(self._store.url)
                while not locks.lost.is_set():
                    self.changed.clear()
                    await self._sync(locks)
                    await wait_event(self.changed, self._settings.source_lock_retry_s)
                    await locks.check(timeout_s=10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # DatabaseUnavailable, mostly
                log.warning("broker sources stopped; starting over: %r", exc)
            finally:
                await self._stop_all()
                if locks is not None:
                    await locks.close()
            await asyncio.sleep(self._settings.source_lock_retry_s)

    async def _sync(self, locks: SourceLocks) -> None:
        triggers = {t.id: t for t in await self._store.list_source_triggers()}
        for trigger_id in set(self._runners) - set(triggers):
            await self._stop(trigger_id)
            await locks.unlock(trigger_id)
        for trigger_id, (runner, task) in list(self._runners.items()):
            if task.done():  # a bug in a runner: it said so; start it again
                self._runners[trigger_id] = (runner, self._start(runner))
        for trigger in triggers.values():
            if trigger.id not in self._runners and await locks.try_lock(trigger.id):
                runner = self._runner(trigger)
                self._runners[trigger.id] = (runner, self._start(runner))

    def _runner(self, trigger: Trigger) -> SourceRunner:
        return SourceRunner(
            trigger,
            lambda: kinds.consumer(trigger, self._cipher),
            self._store,
            self._settings,
            wake=self._wake,
            must_notify=self._must_notify,
        )

    def _start(self, runner: SourceRunner) -> asyncio.Task[None]:
        task = asyncio.create_task(runner.run(), name=f"broker source {runner.trigger.id}")
        task.add_done_callback(_report)
        return task

    async def _stop(self, trigger_id: int) -> None:
        _, task = self._runners.pop(trigger_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _stop_all(self) -> None:
        for trigger_id in list(self._runners):
            await self._stop(trigger_id)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s died", task.get_name(), exc_info=task.exception())
