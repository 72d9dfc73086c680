"""Background tasks: named, owned and watched.

`Supervisor.spawn` starts a named task and holds it until it ends. If a critical task fails or
returns, `failed` says why and `broken` is set, so that the owner stops; a failed task that is
not critical is logged. `close` cancels what still runs and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Supervisor:
    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed: BaseException | None = None
        self.failed_task: str | None = None
        """The name of the critical task that died, if one did."""
        self.broken = asyncio.Event()
        """Set when a critical task died: the owner should stop."""
        self.closing = False
        """Once set, tasks that end are not reported: they are being stopped."""

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, *, critical: bool = False
    ) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._ended(t, critical))
        return task

    def _ended(self, task: asyncio.Task[Any], critical: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self.closing:
            return
        name = task.get_name()
        exc = task.exception()
        if critical:
            self._log.critical("background task %r stopped", name, exc_info=exc)
            self.failed = exc or RuntimeError(f"background task {name!r} stopped")
            self.failed_task = name
            self.broken.set()
        elif exc is not None:
            self._log.error("background task %r failed", name, exc_info=exc)

    async def close(self) -> None:
        """Cancel every task still running and wait until they have ended."""
        self.closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)
