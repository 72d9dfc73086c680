"""Group commit: concurrent requests that each must commit one row share one statement.

While one batch is being committed, the items that arrive meanwhile gather into the next; each
caller still returns only after its own item is committed. With 32 concurrent publishers this
turns 32 statements (and commits) into one or two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Commit = Callable[[list[T]], Awaitable[Sequence["R | Exception"]]]


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        commit: Commit[T, R],
        *,
        max_batch: int = 500,
        max_bytes: int = 32 << 20,
        size: Callable[[T], int] = lambda _: 0,
        after: Callable[[], None] | None = None,
    ) -> None:
        """`commit(items)` commits a batch and returns, per item, its result or the
        exception that item's caller gets; `after()` runs after each committed batch. A batch
        holds at most `max_batch` items and (beyond its first) `max_bytes` of `size`."""
        self._commit = commit
        self._after = after
        self._size = size
        self.max_bytes = max_bytes
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.max_batch = max_batch

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="group commit")
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                count, total = 0, 0
                for item, _ in self._waiting[: self.max_batch]:
                    total += self._size(item)
                    if count and total > self.max_bytes:
                        break
                    count += 1
                batch = self._waiting[:count]
                del self._waiting[:count]
                try:
                    results = await self._commit([item for item, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller went away (the item may be committed)
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                if self._after is not None:
                    self._after()
        finally:
            self._flusher = None
