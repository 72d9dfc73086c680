"""The live scheduler: runs the pool state of `scheduler.pool` against a backend.

`acquire` gives the gateway a slot on a warm instance of a function version, starting one when
none is free: by specializing a prewarmed generic instance when the generic pool has one, else by
starting a new process. Calls that find no free slot wait in a bounded per-version queue. A reaper
stops instances whose keep-alive ran out (scale to zero), and the generic pool refills off the
request path. Background tasks are named and watched: if one dies, `failed` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from invoker.protocol import Connection, ErrorInfo
from scheduler.backends import Backend, BackendError, InstanceHandle, describe_exit
from scheduler.policy import FunctionPolicy, PolicyRouter
from scheduler.pool import Instance, Pool, State, VersionKey
from store.records import Version, code_digest

log = logging.getLogger("ember.scheduler")


@dataclass(slots=True, frozen=True, kw_only=True)
class PoolSettings:
    keep_alive_s: float = 600.0
    """Idle seconds before a specialized instance stops (scale to zero). Default: 10 min, as
    OpenWhisk."""
    generic_pool_size: int = 2
    """Prewarmed generic instances kept ready, so a cold start is a specialization (ms), not a
    process start."""
    max_instances: int = 20
    """Instances per function version at most."""
    max_queue: int = 100
    """Calls per function version that may wait for a slot; more get 429."""
    queue_timeout_s: float = 30.0
    """How long a call waits for a slot before it gets 503."""
    specialize_timeout_s: float = 30.0
    """How long importing a function's module may take."""
    stop_grace_s: float = 2.0
    """Seconds between SIGTERM and SIGKILL when stopping an instance."""
    max_start_backoff_s: float = 30.0
    """After a version fails to start, calls fail fast for 0.5 s, doubling per failure up to
    this, instead of restarting it in a loop (like Kubernetes' crash-loop back-off)."""
    max_response_bytes: int = 6 << 20
    """Largest response body a handler may return (FN_MAX_RESPONSE); a larger one is an error
    (502 response_too_large), and the gateway never buffers more than this per call."""


class SchedulerError(Exception):
    """Base of the scheduler's errors."""


class QueueFull(SchedulerError):
    def __init__(self, function: str, limit: int, retry_after_s: float) -> None:
        super().__init__(
            f'function "{function}" has {limit} calls waiting already; retry later or raise '
            "its instance limit"
        )
        self.retry_after_s = retry_after_s


class QueueTimeout(SchedulerError):
    pass


class StartFailed(SchedulerError):
    """No instance could be started or specialized for the function."""

    def __init__(self, message: str, error: ErrorInfo | None = None, logs: str = "") -> None:
        super().__init__(message)
        self.error: ErrorInfo = error or {"type": "StartFailed", "message": message}
        self.logs = logs


class InstanceLost(SchedulerError):
    pass


@dataclass(slots=True)
class Lease:
    """A slot on one instance, held for one call; give it back with `release` or `discard`."""

    instance: Instance
    connection: Connection
    cold: bool


@dataclass(slots=True)
class _Waiting:
    version: Version
    queue: deque[asyncio.Future[tuple[Instance, bool]]] = field(default_factory=deque)


def _specialize_meta(version: Version, max_response_bytes: int) -> dict[str, Any]:
    c = version.config
    # The code travels as the frame's body (see `_code`): it may exceed a frame's metadata.
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
    }


Prepare = Callable[[Version], Awaitable[dict[str, Any]]]


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        settings: PoolSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        prepare: Prepare | None = None,
        time_scale: float = 1.0,
    ) -> None:
        """`prepare(version)` readies what a version needs on this node before an instance is
        specialized (its environment) and returns what to add to the specialize message.
        `clock` gives the policies' time; `time_scale` is how many of its seconds pass per
        real second (above 1 only to replay a time-compressed trace)."""
        self._prepare = prepare
        self.time_scale = time_scale
        self.settings = settings or PoolSettings()
        self.backend = backend
        self.clock = clock
        self.policies = PolicyRouter(
            FunctionPolicy(
                keep_alive_s=self.settings.keep_alive_s, max_instances=self.settings.max_instances
            )
        )
        self.pool = Pool(self.policies)
        self.prewarm_starts: dict[str, int] = {}
        self._known: dict[VersionKey, Version] = {}
        self._active: dict[str, VersionKey] = {}
        """Each function's active version, as the gateway last said (`ensure_warm`): only it
        is kept at `min_warm` and prewarmed."""
        self.starts_total = 0
        self.failed: BaseException | None = None
        self.broken = asyncio.Event()
        """Set when a critical background task died: the owner should stop the platform."""
        self._handles: dict[str, InstanceHandle] = {}
        self._instance_stops: set[asyncio.Future[None]] = set()
        self._conns: dict[str, list[Connection]] = {}
        self._waiting: dict[VersionKey, _Waiting] = {}
        self._start_failures: dict[VersionKey, int] = {}
        self._start_backoff: dict[VersionKey, tuple[float, StartFailed]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake_reaper = asyncio.Event()
        self._reaper_target = math.inf
        self._refill = asyncio.Event()
        self._changed = asyncio.Event()
        self._watchers = 0
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.backend.start()
        except BackendError as exc:
            raise StartFailed(f"cannot start the invoker backend: {exc}") from exc
        self._spawn(self._reaper(), "pool reaper", critical=True)
        self._spawn(self._refiller(), "generic pool refill", critical=True)
        self._refill.set()

    async def stop(self) -> None:
        self._stopping = True
        for waiting in self._waiting.values():
            for fut in waiting.queue:
                if not fut.done():
                    fut.set_exception(StartFailed("the platform is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._drop(i, "platform shutdown") for i in list(self.pool.instances.values()))
        )
        await asyncio.gather(*self._instance_stops, return_exceptions=True)
        await self.backend.close()

    def _spawn(self, coro: Any, name: str, *, critical: bool = False) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled() or self._stopping:
                return
            exc = t.exception()
            if exc is not None:
                log.error("background task %r failed", name, exc_info=exc)
                if critical:
                    self.failed = exc
                    self.broken.set()
            elif critical:
                self.failed = RuntimeError(f"background task {name!r} stopped")
                self.broken.set()

        task.add_done_callback(done)

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait for the pool to reach a state (tests and tools); raises TimeoutError.

        The predicate is checked again after every change of the pool or of a queue.
        """
        self._watchers += 1
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        finally:
            self._watchers -= 1

    def _notify(self) -> None:
        if self._watchers:  # nobody waits in production: one integer test per event
            self._changed.set()

    # -- the call path ----------------------------------------------------------------------

    async def acquire(self, version: Version) -> Lease:
        key = (version.function, version.version)
        backoff = self._start_backoff.get(key)
        if backoff is not None and backoff[0] > self.clock() and self.pool.count(key) == 0:
            raise backoff[1]  # it failed to start just now: do not start it again yet
        now = self.clock()
        self.policies.on_arrival(version.function, now)
        instance = self.pool.claim(key, now)
        cold = False
        if instance is None:
            instance, cold = await self._wait_for_slot(key, version)
        self._notify()
        try:
            connection = await self._connection(instance)
        except (OSError, KeyError) as exc:  # KeyError: it exited since it was handed out
            self._spawn(self._drop(instance, f"cannot connect: {exc!r}"), f"stop {instance.id}")
            raise InstanceLost(f"instance of {version.function} is unreachable: {exc!r}") from exc
        except BaseException:
            self._give_back(instance)
            raise
        return Lease(instance, connection, cold)

    async def _wait_for_slot(self, key: VersionKey, version: Version) -> tuple[Instance, bool]:
        if self._stopping:
            raise StartFailed("the platform is shutting down")
        waiting = self._waiting.get(key)
        if len(waiting.queue if waiting else ()) >= self.settings.max_queue:
            raise QueueFull(
                version.function,
                self.settings.max_queue,
                retry_after_s=max(1.0, version.config.timeout_s / 10),
            )
        if waiting is None:
            waiting = self._waiting[key] = _Waiting(version)
        fut: asyncio.Future[tuple[Instance, bool]] = asyncio.get_running_loop().create_future()
        waiting.queue.append(fut)
        self._notify()
        self._start_for(key)
        try:
            async with asyncio.timeout(self.settings.queue_timeout_s):
                return await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # The slot was handed to us just as we gave up: give it back.
                self._give_back(fut.result()[0])
            if isinstance(exc, TimeoutError):
                raise QueueTimeout(
                    f'no instance of "{version.function}" became free within '
                    f"{self.settings.queue_timeout_s:g}s"
                ) from None
            raise
        finally:
            if fut in waiting.queue:  # (deque.remove's error would repr the future: slow)
                waiting.queue.remove(fut)
            if not waiting.queue and self._waiting.get(key) is waiting:
                del self._waiting[key]

    async def _connection(self, instance: Instance) -> Connection:
        free = self._conns.get(instance.id)
        while free:
            conn = free.pop()
            if conn.usable:
                return conn
            conn.close()
        handle = self._handles[instance.id]
        return await Connection.open(
            handle.host, handle.port, max_body_bytes=self.settings.max_response_bytes
        )

    def release(self, lease: Lease) -> None:
        """Give back the slot of a call that completed (the instance is fine)."""
        self._give_back(lease.instance, lease.connection)

    def _give_back(self, instance: Instance, connection: Connection | None = None) -> None:
        self.pool.release(instance, self.clock())
        self._notify()
        if instance.id not in self.pool.instances:
            # Retired while busy (function deleted): stop it once its last call is over.
            if connection is not None:
                connection.close()
            if instance.busy <= 0:
                self._spawn(self._drop(instance, "retired"), f"stop {instance.id}")
            return
        if connection is not None and not connection.closed:
            self._conns.setdefault(instance.id, []).append(connection)
        assert instance.key is not None
        if instance.key in self._waiting:
            self._hand_out(instance.key, cold=False)
        elif instance.busy == 0 and instance.keep_until < self._reaper_target:
            self._wake_reaper.set()

    async def discard(self, lease: Lease, reason: str, *, wait_exit_s: float = 0.0) -> str:
        """Drop the instance of a failed call; returns how it ended (e.g. "killed by SIGSEGV")."""
        lease.connection.close()
        handle = self._handles.get(lease.instance.id)
        how = "stopped by the platform"
        if handle is not None and wait_exit_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_exit_s):
                    how = describe_exit(await handle.wait())
                    note = getattr(handle, "exit_note", None)  # e.g. the memory limit's
                    if note:
                        how = f"{how}: {note}"
        await self._drop(lease.instance, reason)
        return how

    def discard_soon(self, lease: Lease, reason: str) -> None:
        """`discard` in a task of its own: for callers being cancelled."""
        self._spawn(self.discard(lease, reason), f"discard {lease.instance.id}")

    def _hand_out(self, key: VersionKey, *, cold: bool) -> None:
        waiting = self._waiting.get(key)
        while waiting and waiting.queue:
            fut = waiting.queue[0]
            if fut.done():
                waiting.queue.popleft()
                continue
            instance = self.pool.claim(key, self.clock())
            if instance is None:
                return
            waiting.queue.popleft()
            fut.set_result((instance, cold))

    # -- starting instances -----------------------------------------------------------------

    def _learn(self, key: VersionKey, version: Version) -> None:
        self._known[key] = version
        self.policies.note_memory(version.function, version.config.memory_bytes / (1 << 20))

    def _start_for(self, key: VersionKey) -> None:
        """Start as many instances as the waiting calls need, within the instance limit."""
        waiting = self._waiting.get(key)
        if waiting is None:
            return
        self._learn(key, waiting.version)
        needed = len(waiting.queue) - self.pool.starting(key)
        room = self.policies.settings(key[0]).max_instances - self.pool.count(key)
        concurrency = waiting.version.config.concurrency
        for _ in range(max(0, min(room, math.ceil(needed / concurrency)))):
            instance = self.pool.take_generic()
            fresh = instance is None
            if instance is None:
                instance = self.pool.new_instance(self.clock())
            self.pool.begin_specialize(instance, key, concurrency)
            self._spawn(self._bring_up(instance, waiting.version, fresh), f"start {instance.id}")
            self._refill.set()

    async def _bring_up(
        self, instance: Instance, version: Version, fresh: bool, prewarm_until: float | None = None
    ) -> None:
        key = (version.function, version.version)
        try:
            await self._specialize(instance, version, fresh)
        except StartFailed as exc:
            # Back off before starting this version again, so a module that fails to import
            # is not restarted in a loop; the calls waiting for it get the error now.
            failures = self._start_failures.get(key, 0) + 1
            self._start_failures[key] = failures
            delay_s = min(self.settings.max_start_backoff_s, 0.5 * 2 ** (failures - 1))
            self._start_backoff[key] = (self.clock() + delay_s, exc)
            self.pool.remove(instance)
            self._fail_waiters(key, exc)
            await self._drop(instance, str(exc), restart=False)
            return
        if instance.id not in self.pool.instances:  # retired while it was starting
            await self._drop(instance, "retired while starting", restart=False)
            return
        self._start_failures.pop(key, None)
        self._start_backoff.pop(key, None)
        if prewarm_until is not None:
            self.pool.mark_prewarmed(instance, self.clock(), prewarm_until)
        else:
            self.pool.mark_ready(instance, self.clock())
        self._hand_out(key, cold=True)
        if self.pool.instances.get(instance.id) is instance and instance.busy == 0:
            self._wake_reaper.set()

    async def _specialize(self, instance: Instance, version: Version, fresh: bool) -> None:
        code = version.package.archive or version.source.encode()
        if version.sha256 and version.sha256 not in (
            code_digest(code, version.package.env_hash, version.config.preimport),
            hashlib.sha256(code).hexdigest(),
        ):  # (the digest of versions before 0.1)
            raise StartFailed(
                f'the code of "{version.function}" version {version.version} does not match '
                "its sha256: it was changed in the database outside Ember; deploy it again"
            )
        meta = _specialize_meta(version, self.settings.max_response_bytes)
        if self._prepare is not None:  # first: a version that cannot run costs no instance
            try:
                meta.update(await self._prepare(version))
            except Exception as exc:
                raise StartFailed(f"could not prepare the function's environment: {exc}") from exc
        if fresh:
            await self._start_process(instance, version)
        try:
            handle = self._handles[instance.id]
            try:
                meta["sandbox"] = self.backend.instance_spec(handle, version)
            except (BackendError, OSError) as exc:
                raise StartFailed(f"could not fit the instance to the function: {exc}") from exc
            conn = await self._connection(instance)
            async with asyncio.timeout(self.settings.specialize_timeout_s):
                reply, _ = await conn.call(meta, code)
        except TimeoutError:
            raise StartFailed(
                f'importing "{version.filename}" took longer than '
                f"{self.settings.specialize_timeout_s:g}s"
            ) from None
        except (OSError, KeyError) as exc:
            raise StartFailed(f"the instance died while importing the function: {exc}") from exc
        if not reply.get("ok"):
            conn.close()
            error = cast(ErrorInfo, reply.get("error") or {"type": "Error", "message": ""})
            raise StartFailed(
                f"{error.get('type', 'Error')}: {error.get('message', '')}",
                error,
                reply.get("logs", ""),
            )
        self._conns.setdefault(instance.id, []).append(conn)

    async def _start_process(self, instance: Instance, version: Version | None = None) -> None:
        try:
            handle = await self.backend.start_instance(instance.id, version)
        except BackendError as exc:
            raise StartFailed(str(exc)) from exc
        self.starts_total += 1
        self._handles[instance.id] = handle
        self._spawn(self._watch(instance, handle), f"watch {instance.id}")

    def _fail_waiters(self, key: VersionKey, exc: StartFailed, *, all_: bool = False) -> None:
        waiting = self._waiting.get(key)
        if waiting is None:
            return
        # Calls that the instances still starting can serve keep waiting; the rest fail.
        excess = len(waiting.queue) if all_ else len(waiting.queue) - self.pool.starting(key)
        while excess > 0 and waiting.queue:
            fut = waiting.queue.pop()
            if not fut.done():
                fut.set_exception(exc)
                excess -= 1

    async def _watch(self, instance: Instance, handle: InstanceHandle) -> None:
        code = await handle.wait()
        if instance.id in self._handles and not self._stopping:
            log.warning(
                "instance exited", extra={"instance": instance.id, "exit": describe_exit(code)}
            )
            await self._drop(instance, f"exited ({describe_exit(code)})")

    async def _drop(self, instance: Instance, reason: str, *, restart: bool = True) -> None:
        key = instance.key
        self.pool.remove(instance)
        for conn in self._conns.pop(instance.id, []):
            conn.close()
        handle = self._handles.pop(instance.id, None)
        if handle is not None:
            log.info("stopping instance", extra={"instance": instance.id, "reason": reason})
            # Shielded and owned: a caller cancelled meanwhile (a shutdown) must not leave
            # the process half-stopped; `stop` waits for every stop in flight.
            stopping = asyncio.ensure_future(
                self.backend.stop_instance(handle, grace_s=self.settings.stop_grace_s)
            )
            self._instance_stops.add(stopping)
            stopping.add_done_callback(self._instance_stops.discard)
            await asyncio.shield(stopping)
        if key is None:
            self._refill.set()
        elif restart and key in self._waiting and not self._stopping:
            self._start_for(key)
        elif (
            restart
            and not self._stopping
            and self._active.get(key[0]) == key
            and self.pool.count(key) < self.policies.settings(key[0]).min_warm
        ):
            self._spawn(self.ensure_warm(self._known[key]), f"keep warm {key[0]}")
        self._notify()

    # -- deploy-time checks -----------------------------------------------------------------

    async def check(self, version: Version) -> Instance:
        """Import a version in an instance of its own, before it is stored.

        Raises `StartFailed` with the import error. On success the instance is kept aside;
        `admit` makes it the first warm instance of the stored version, `drop_checked_soon`
        stops it.
        """
        instance = self.pool.take_generic()
        fresh = instance is None
        if instance is None:
            instance = self.pool.new_instance(self.clock())
        instance.state = State.STARTING
        self._refill.set()
        try:
            await self._specialize(instance, version, fresh)
        except BaseException as exc:  # failed, or the deploy request was cancelled
            self._spawn(self._drop(instance, f"import check: {exc!r}"), f"stop {instance.id}")
            raise
        instance.concurrency = version.config.concurrency
        return instance

    async def admit(self, instance: Instance, version: Version) -> None:
        """Make a checked instance the first warm instance of `version` (or drop it)."""
        try:
            conn = await self._connection(instance)
            async with asyncio.timeout(self.settings.specialize_timeout_s):
                reply, _ = await conn.call({"op": "relabel", "version": version.version})
        except BaseException as exc:
            # The version is stored and active either way; the first call starts an instance.
            self.drop_checked_soon(instance)
            if isinstance(exc, Exception):
                log.warning("checked instance lost before it served: %r", exc)
                return
            raise
        if not reply.get("ok"):
            conn.close()
            self.drop_checked_soon(instance)
            return
        self._conns.setdefault(instance.id, []).append(conn)
        key = (version.function, version.version)
        self._learn(key, version)
        self.pool.relabel(instance, key)
        self.pool.mark_ready(instance, self.clock())
        self._hand_out(key, cold=True)
        self._wake_reaper.set()

    def drop_checked_soon(self, instance: Instance) -> None:
        self._spawn(self._drop(instance, "deploy did not complete"), f"stop {instance.id}")

    async def retire(self, function: str) -> None:
        """Stop every instance of a deleted function (busy ones once their calls end)."""
        gone = StartFailed(f'function "{function}" was deleted')
        for key in [k for k in self._waiting if k[0] == function]:
            self._fail_waiters(key, gone, all_=True)
        for key in [k for k in self._start_backoff if k[0] == function]:
            self._start_backoff.pop(key, None)
            self._start_failures.pop(key, None)
        for key in [k for k in self._known if k[0] == function]:
            del self._known[key]
        self._active.pop(function, None)
        self.pool.forget(function)
        self.prewarm_starts.pop(function, None)
        self.policies.forget(function)
        idle = []
        for instance in self.pool.of_function(function):
            self.pool.remove(instance)
            if instance.busy == 0 and instance.state is not State.STARTING:
                idle.append(instance)
        await asyncio.gather(*(self._drop(i, "function deleted", restart=False) for i in idle))

    # -- background tasks -------------------------------------------------------------------

    async def _reaper(self) -> None:
        while True:
            now = self.clock()
            expired = self._expired(now)
            for instance in expired:
                self.pool.stopped(instance, now)
                self.pool.remove(instance)
            if expired:
                results = await asyncio.gather(
                    *(self._drop(i, "idle past keep-alive") for i in expired),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, Exception):
                        log.error("could not stop an idle instance", exc_info=result)
            for until, key in self.pool.due_prewarms(now):
                self._prewarm(key, until)
            self._notify()
            self._wake_reaper.clear()
            targets = [
                t for t in (self.pool.next_expiry(), self.pool.next_prewarm()) if t is not None
            ]
            target = min(targets, default=None)
            self._reaper_target = math.inf if target is None else target
            timeout = None if target is None else max(0.0, target - self.clock()) / self.time_scale
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake_reaper.wait()

    def _expired(self, now: float) -> list[Instance]:
        """Instances to stop now: idle past their keep-alive, but never below `min_warm`."""
        expired = []
        kept: dict[VersionKey, int] = {}
        for instance in self.pool.expired(now):
            assert instance.key is not None
            left = kept.setdefault(instance.key, self.pool.count(instance.key))
            if (
                self._active.get(instance.key[0]) == instance.key
                and left <= self.policies.settings(instance.key[0]).min_warm
            ):
                instance.keep_until = math.inf  # kept warm on purpose; re-decided after a call
                continue
            kept[instance.key] = left - 1
            expired.append(instance)
        return expired

    def _prewarm(self, key: VersionKey, until: float) -> None:
        """Start an instance ahead of an expected call, as the policy asked."""
        version = self._known.get(key)
        active = self._active.get(key[0])
        if version is None or self._stopping or (active is not None and active != key):
            return  # unknown, or no longer the active version
        if self.pool.count(key) > 0:
            for existing in self.instances_of(key[0]):
                if existing.key == key and existing.busy == 0 and existing.state is State.READY:
                    existing.keep_until = max(existing.keep_until, until)
            return
        instance = self.pool.take_generic()
        fresh = instance is None
        if instance is None:
            instance = self.pool.new_instance(self.clock())
        self.pool.begin_specialize(instance, key, version.config.concurrency)
        self.prewarm_starts[key[0]] = self.prewarm_starts.get(key[0], 0) + 1
        self._spawn(
            self._bring_up(instance, version, fresh, prewarm_until=until), f"prewarm {instance.id}"
        )
        self._refill.set()

    def configure(self, default: FunctionPolicy, overrides: dict[str, FunctionPolicy]) -> None:
        """Apply new policies now: idle instances get a keep-alive under the new settings."""
        self.policies.default = default
        self.policies.overrides = overrides
        for instance in self.pool.instances.values():
            if (
                instance.key is None
                or instance.busy
                or instance.state is not State.READY
                or instance.prewarmed
            ):
                continue
            settings = self.policies.settings(instance.key[0])
            if settings.prewarm == "fixed" or instance.keep_until == math.inf:
                # (inf: kept for a min_warm that may have been lowered)
                instance.keep_until = instance.idle_since + settings.keep_alive_s
        self._wake_reaper.set()

    async def ensure_warm(self, version: Version) -> None:
        """Note `version` as its function's active one, and start instances of it up to the
        function's `min_warm` (within `max_instances`)."""
        key = (version.function, version.version)
        previous = self._active.get(version.function)
        self._active[version.function] = key
        self._learn(key, version)
        if previous is not None and previous != key and self.pool.count(previous) == 0:
            self._known.pop(previous, None)
        if previous != key:
            self.pool.cancel_prewarms(version.function)
        if self._stopping or self.start_backoff_remaining_s(key) > 0:
            return
        settings = self.policies.settings(version.function)
        missing = min(settings.min_warm, settings.max_instances) - self.pool.count(key)
        for _ in range(max(0, missing)):
            instance = self.pool.take_generic()
            fresh = instance is None
            if instance is None:
                instance = self.pool.new_instance(self.clock())
            self.pool.begin_specialize(instance, key, version.config.concurrency)
            self._spawn(self._bring_up(instance, version, fresh), f"keep warm {instance.id}")
        self._refill.set()

    async def _refiller(self) -> None:
        while True:
            await self._refill.wait()
            self._refill.clear()
            size = self.settings.generic_pool_size
            while not self._stopping and self.pool.generic_ready() < size:
                instance = self.pool.new_instance(self.clock())
                try:
                    await self._start_process(instance)
                except StartFailed as exc:
                    self.pool.remove(instance)
                    log.error("cannot prewarm a generic instance: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                if instance.id in self.pool.instances:
                    self.pool.mark_generic(instance)
                    self._notify()

    # -- read-outs --------------------------------------------------------------------------

    def instance_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in State}
        for instance in self.pool.instances.values():
            state = "busy" if instance.busy else instance.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    def waiting(self, key: VersionKey) -> int:
        """Calls of a version waiting for a slot."""
        waiting = self._waiting.get(key)
        return len(waiting.queue) if waiting else 0

    def start_backoff_remaining_s(self, key: VersionKey) -> float:
        """How long calls of a version that failed to start still fail fast."""
        backoff = self._start_backoff.get(key)
        return max(0.0, backoff[0] - self.clock()) if backoff else 0.0

    def instances_of(self, function: str) -> list[Instance]:
        return self.pool.of_function(function)

    def knows(self, function: str) -> bool:
        """Whether anything of `function` is here: instances, waiting calls, an active
        version (false again once it was retired)."""
        return (
            function in self._active
            or bool(self.pool.of_function(function))
            or any(k[0] == function for k in (*self._waiting, *self._known))
        )

    def pid_of(self, instance: Instance) -> int | None:
        """The process that stands for an instance on this machine (local backend), if any."""
        handle = self._handles.get(instance.id)
        pid = getattr(handle, "pid", None)
        return pid if isinstance(pid, int) else None

    def address_of(self, instance: Instance) -> str:
        """Where an instance listens: `host:port`, or `unix:/path`."""
        handle = self._handles[instance.id]
        return handle.host if handle.host.startswith("unix:") else f"{handle.host}:{handle.port}"
