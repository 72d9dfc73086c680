"""What the live scheduler holds besides the pool state: one record per instance, one per
function version.

`Live` is an instance as the scheduler runs it: its pool entry, the handle of its process or pod
(once the backend started it) and its idle connections. `Tracked` is a function version the
scheduler knows: the version, the calls waiting for a slot, and its start back-off. Keeping each
thing in one record means dropping an instance or forgetting a version is one `pop`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

from invoker.protocol import Connection, EnvironmentSource, Reply, Request, SpecializeRequest
from scheduler.backends import InstanceHandle
from scheduler.capacity import GENERIC_MEMORY_BYTES
from scheduler.errors import StartFailed
from scheduler.pool import Instance
from store.records import Version


class InstanceConnection(Protocol):
    """One connection to an instance: one call at a time (`invoker.protocol.Connection`)."""

    closed: bool

    async def call(
        self, meta: Request, body: bytes = b"", *, timeout_s: float | None = None
    ) -> tuple[Reply, bytes]: ...

    @property
    def usable(self) -> bool: ...

    def close(self) -> None: ...


Connect = Callable[[InstanceHandle, int], Awaitable[InstanceConnection]]
"""Open a connection to an instance, accepting replies up to the given number of bytes."""


async def open_connection(handle: InstanceHandle, max_body_bytes: int) -> InstanceConnection:
    return await Connection.open(handle.host, handle.port, max_body_bytes=max_body_bytes)


class InstanceGone(Exception):
    """The instance was dropped (it exited or was stopped) before it could be used."""


@dataclass(slots=True, eq=False)
class Live:
    instance: Instance
    handle: InstanceHandle | None = None
    """None until the backend has started the process or pod."""
    idle: list[InstanceConnection] = field(default_factory=list)
    """Open connections no call uses now, the most recently used last."""
    memory_bytes: int = GENERIC_MEMORY_BYTES
    """What it is charged against the node's capacity: its function's memory limit."""

    def close_connections(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


@dataclass(slots=True, eq=False)
class Tracked:
    version: Version
    waiting: deque[asyncio.Future[tuple[Instance, bool]]] = field(default_factory=deque)
    """Calls waiting for a slot, oldest first."""
    failures: int = 0
    """Starts that failed in a row."""
    backoff_until: float = -math.inf
    backoff_error: StartFailed | None = None
    """Until `backoff_until` (the scheduler's clock), calls fail fast with this error."""
    imports: int = 0
    """Instances of it made by an import on this node (not forks of its template): the
    second earns it a template."""

    def enqueue(
        self, timeout_s: float
    ) -> tuple[asyncio.Future[tuple[Instance, bool]], asyncio.TimerHandle]:
        """A place in the queue, which fails with `TimeoutError` after `timeout_s` unless a
        slot came first. (A timer on the future, not `asyncio.timeout`: a third of the cost,
        and at more clients than instances most calls queue.) Cancel the timer when done."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Instance, bool]] = loop.create_future()
        self.waiting.append(fut)
        return fut, loop.call_later(timeout_s, _time_out, fut)

    def backing_off(self, now: float) -> StartFailed | None:
        if self.backoff_error is not None and self.backoff_until > now:
            return self.backoff_error
        return None

    def failed(self, error: StartFailed, now: float, max_backoff_s: float) -> None:
        """A start failed: fail fast for 0.5 s, doubling per failure in a row."""
        self.failures += 1
        self.backoff_until = now + min(max_backoff_s, 0.5 * 2 ** (self.failures - 1))
        self.backoff_error = error

    def started(self) -> None:
        self.failures = 0
        self.backoff_until = -math.inf
        self.backoff_error = None


def _time_out(fut: asyncio.Future[tuple[Instance, bool]]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def specialize_meta(version: Version, max_response_bytes: int) -> SpecializeRequest:
    c = version.config
    # The code travels as the frame's body: it may exceed a frame's metadata.
    return {
        "op": "specialize",
        "function": version.function,
        "version": version.version,
        "filename": version.filename,
        "code": "zip" if version.package.archive else "source",
        "entry": c.entry,
        "env": dict(c.env),
        "timeout_s": c.timeout_s,
        "memory_bytes": c.memory_bytes,
        "concurrency": c.concurrency,
        "preimport": list(c.preimport),
        "max_reply_bytes": max_response_bytes,
        "style": c.style,
        "style_options": dict(c.style_options),
    }


def add_prepared(meta: SpecializeRequest, prepared: Prepared) -> None:
    """Put what `prepare` found for a version into its specialize message."""
    if "paths" in prepared:
        meta["paths"] = prepared["paths"]
    if "environment" in prepared:
        meta["environment"] = prepared["environment"]
    if "env" in prepared:
        meta["env"] = {**meta.get("env", {}), **prepared["env"]}


@dataclass(slots=True, frozen=True)
class Checked:
    """An instance that imported a candidate version at deploy, kept aside for `admit`, and
    what its import found: the style and entry point (detected when the deploy said "auto")."""

    instance: Instance
    style: str
    entry: str
    style_options: dict[str, str]
    slow_import: bool = False
    """Its import was slow (`Upkeep.slow_import`): the version's template is made at once."""


@dataclass(slots=True)
class Lease:
    """A slot on one instance, held for one call; give it back with `release` or `discard`."""

    instance: Instance
    connection: InstanceConnection
    cold: bool


class Prepared(TypedDict, total=False):
    """What a version needs on this node, for its specialize message."""

    paths: list[str]
    """Its environment's directories (requirements), where this node has them."""
    environment: EnvironmentSource
    """Where the instance fetches its environment itself (a pod: Kubernetes)."""
    env: dict[str, str]
    """Environment variables kept out of the version's record (its secrets' values)."""


Prepare = Callable[[Version], Awaitable[Prepared]]
