"""The live scheduler: runs the pool state of `scheduler.pool` against a backend.

`acquire` gives the gateway a slot on a warm instance of a function version, starting one when
none is free: by specializing a prewarmed generic instance when the generic pool has one, else by
starting a new process. Calls that find no free slot wait in a bounded per-version queue. A reaper
stops instances whose keep-alive ran out (scale to zero), and the generic pool refills off the
request path. Background tasks are named and watched: if one dies, `failed` says why.

Each instance is one `Live` record and each known version one `Tracked` record
(`scheduler.live`); every instance is started by `_launch` (or `check`, at deploy) through
`_specialize`. `scheduler.testing` runs all of it on in-memory instances and a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable

from invoker.protocol import ErrorInfo, Reply
from scheduler.backends import Backend, BackendError, describe_exit
from scheduler.capacity import Capacity, Room
from scheduler.errors import (
    AtCapacity,
    InstanceLost,
    QueueFull,
    QueueTimeout,
    SchedulerError,
    StartFailed,
)
from scheduler.live import (
    Connect,
    InstanceConnection,
    InstanceGone,
    Lease,
    Live,
    Prepare,
    Prepared,
    Tracked,
    add_prepared,
    open_connection,
    specialize_meta,
)
from scheduler.pool import Instance, Pool, VersionKey
from scheduler.router import FunctionPolicy, PolicyRouter
from scheduler.settings import PoolSettings
from scheduler.tasks import Supervisor
from scheduler.upkeep import Upkeep
from store.records import Version, code_digest

__all__ = ["AtCapacity", "InstanceLost", "Lease", "PoolSettings", "Prepare", "Prepared"]
__all__ += ["QueueFull", "QueueTimeout", "Scheduler", "SchedulerError", "StartFailed"]

log = logging.getLogger("ember.scheduler")


class Scheduler(Upkeep):
    def __init__(
        self,
        backend: Backend,
        settings: PoolSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        prepare: Prepare | None = None,
        time_scale: float = 1.0,
        connect: Connect = open_connection,
    ) -> None:
        """`prepare(version)` readies what a version needs on this node before an instance is
        specialized (its environment) and returns what to add to the specialize message.
        `clock` gives the policies' time; `time_scale` is how many of its seconds pass per
        real second (above 1 only to replay a time-compressed trace). `connect` opens a
        connection to an instance (a fake one in unit tests)."""
        self.backend = backend
        self.settings = settings or PoolSettings()
        self.clock = clock
        self.time_scale = time_scale
        self._prepare = prepare
        self._connect = connect
        self.policies = PolicyRouter(
            FunctionPolicy(
                keep_alive_s=self.settings.keep_alive_s, max_instances=self.settings.max_instances
            )
        )
        self.pool = Pool(self.policies)
        self.prewarm_starts: dict[str, int] = {}
        self.starts_total = 0
        self.evictions_total = 0
        self._live: dict[str, Live] = {}
        self.room = Room(
            Capacity.resolve(
                self.settings.max_total_instances, self.settings.max_total_memory_bytes
            ),
            self.pool.instances,
            lambda i: self._live[i.id].memory_bytes if i.id in self._live else 0,
            self._usage,
        )
        self._versions: dict[VersionKey, Tracked] = {}
        self._active: dict[str, VersionKey] = {}
        """Each function's active version, as the gateway last said (`ensure_warm`): only it
        is kept at `min_warm` and prewarmed."""
        self._tasks = Supervisor(log)
        self._instance_stops: dict[asyncio.Future[None], int] = {}
        """Stops in flight, with the memory each instance is charged until it is stopped."""
        self._wake_reaper = asyncio.Event()
        self._reaper_target = math.inf
        self._refill = asyncio.Event()
        self._changed = asyncio.Event()
        self._watchers = 0
        self._stopping = False

    @property
    def failed(self) -> BaseException | None:
        """Why a critical background task died, if one did."""
        return self._tasks.failed

    @property
    def broken(self) -> asyncio.Event:
        """Set when a critical background task died: the owner should stop the platform."""
        return self._tasks.broken

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.backend.start()
        except BackendError as exc:
            raise StartFailed(f"cannot start the invoker backend: {exc}") from exc
        self.policies.defer_to(asyncio.get_running_loop().call_soon)
        self._tasks.spawn(self._reaper(), "pool reaper", critical=True)
        self._tasks.spawn(self._refiller(), "generic pool refill", critical=True)
        self._refill.set()

    async def stop(self) -> None:
        self._stopping = True
        self._tasks.closing = True
        for tracked in self._versions.values():
            for fut in tracked.waiting:
                if not fut.done():
                    fut.set_exception(StartFailed("the platform is shutting down"))
        await self._tasks.close()
        # Every instance with a record: also those out of the pool whose stop was still to run
        # in a task just cancelled (evicted, retired, discarded).
        await asyncio.gather(
            *(self._drop(live.instance, "platform shutdown") for live in list(self._live.values()))
        )
        await asyncio.gather(*self._instance_stops, return_exceptions=True)
        await self.backend.close()

    def _stop_soon(self, instance: Instance, reason: str) -> asyncio.Task[None]:
        return self._tasks.spawn(self._drop(instance, reason), f"stop {instance.id}")

    def _notify(self) -> None:
        if self._watchers:  # nobody waits in production: one integer test per event
            self._changed.set()

    # -- the call path ----------------------------------------------------------------------

    async def acquire(self, version: Version) -> Lease:
        key = (version.function, version.version)
        now = self.clock()
        tracked = self._versions.get(key)
        if tracked is not None and self.pool.count(key) == 0:
            failing = tracked.backing_off(now)
            if failing is not None:
                raise failing  # it failed to start just now: do not start it again yet
        self.policies.on_arrival(version.function, now)
        instance = self.pool.claim(key, now)
        cold = False
        if instance is None:
            instance, cold = await self._wait_for_slot(key, version)
        self._notify()
        try:
            connection = await self._connection(instance)
        except (OSError, InstanceGone) as exc:
            self._stop_soon(instance, f"cannot connect: {exc!r}")
            raise InstanceLost(f"instance of {version.function} is unreachable: {exc!r}") from exc
        except BaseException:
            self._give_back(instance)
            raise
        return Lease(instance, connection, cold)

    async def _wait_for_slot(self, key: VersionKey, version: Version) -> tuple[Instance, bool]:
        if self._stopping:
            raise StartFailed("the platform is shutting down")
        tracked = self._versions.get(key)
        if tracked is not None and len(tracked.waiting) >= self.settings.max_queue:
            raise QueueFull(
                version.function,
                self.settings.max_queue,
                retry_after_s=max(1.0, version.config.timeout_s / 10),
            )
        tracked = self._learn(key, version)
        fut, timer = tracked.enqueue(self.settings.queue_timeout_s)
        self._notify()
        self._start_for(tracked)
        try:
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
            timer.cancel()
            if fut in tracked.waiting:  # (deque.remove's error would repr the future: slow)
                tracked.waiting.remove(fut)

    async def _connection(self, instance: Instance) -> InstanceConnection:
        live = self._live.get(instance.id)
        if live is None or live.handle is None:
            raise InstanceGone(f"instance {instance.id} is gone")
        while live.idle:
            conn = live.idle.pop()
            if conn.usable:
                return conn
            conn.close()
        return await self._connect(live.handle, self.settings.max_response_bytes)

    def _keep_connection(self, instance: Instance, conn: InstanceConnection) -> None:
        live = self._live.get(instance.id)
        if live is None or conn.closed:
            conn.close()
        else:
            live.idle.append(conn)

    def release(self, lease: Lease) -> None:
        """Give back the slot of a call that completed (the instance is fine)."""
        self._give_back(lease.instance, lease.connection)

    def _give_back(self, instance: Instance, connection: InstanceConnection | None = None) -> None:
        self.pool.release(instance, self.clock())
        self._notify()
        if instance.id not in self.pool.instances:
            # Retired while busy (function deleted): stop it once its last call is over.
            if connection is not None:
                connection.close()
            if instance.busy <= 0:
                self._stop_soon(instance, "retired")
            return
        if connection is not None:
            self._keep_connection(instance, connection)
        assert instance.key is not None
        tracked = self._versions.get(instance.key)
        if tracked is not None and tracked.waiting:
            self._hand_out(tracked, cold=False)
        elif instance.busy == 0 and instance.keep_until < self._reaper_target:
            self._wake_reaper.set()

    async def discard(self, lease: Lease, reason: str, *, wait_exit_s: float = 0.0) -> str:
        """Drop the instance of a failed call; returns how it ended (e.g. "killed by SIGSEGV")."""
        lease.connection.close()
        live = self._live.get(lease.instance.id)
        how = "stopped by the platform"
        if live is not None and live.handle is not None and wait_exit_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_exit_s):
                    how = describe_exit(await live.handle.wait())
                    note = getattr(live.handle, "exit_note", None)  # e.g. the memory limit's
                    if note:
                        how = f"{how}: {note}"
        await self._drop(lease.instance, reason)
        return how

    def discard_soon(self, lease: Lease, reason: str) -> None:
        """`discard` in a task of its own: for callers being cancelled."""
        self._tasks.spawn(self.discard(lease, reason), f"discard {lease.instance.id}")

    def _hand_out(self, tracked: Tracked, *, cold: bool) -> None:
        key = (tracked.version.function, tracked.version.version)
        while tracked.waiting:
            fut = tracked.waiting[0]
            if fut.done():
                tracked.waiting.popleft()
                continue
            instance = self.pool.claim(key, self.clock())
            if instance is None:
                return
            tracked.waiting.popleft()
            fut.set_result((instance, cold))

    # -- starting instances -----------------------------------------------------------------

    def _learn(self, key: VersionKey, version: Version) -> Tracked:
        tracked = self._versions.get(key)
        if tracked is None:
            tracked = self._versions[key] = Tracked(version)
        else:
            tracked.version = version
        self.policies.note_memory(version.function, version.config.memory_bytes / (1 << 20))
        return tracked

    def _new_instance(self) -> Instance:
        instance = self.pool.new_instance(self.clock())
        self._live[instance.id] = Live(instance)
        return instance

    def _take_instance(self, fork: bool = False) -> tuple[Instance, bool]:
        """A generic instance to specialize, else (or to `fork` from a template) a new one to
        start (`True`: new)."""
        instance = None if fork else self.pool.take_generic()
        if instance is not None:
            return instance, False
        return self._new_instance(), True

    def _launch(
        self, tracked: Tracked, why: str, *, prewarm_until: float | None = None, evict: bool = True
    ) -> bool:
        """Start one instance of a version in the background, if the node has room: the one
        way instances start."""
        version = tracked.version
        key = (version.function, version.version)
        fork = self._forkable(version)
        evicting = self._make_room(version.config.memory_bytes, key, evict=evict, fork=fork)
        if evicting is None:
            return False
        instance, fresh = self._take_instance(fork)
        self._live[instance.id].memory_bytes = version.config.memory_bytes
        self.pool.begin_specialize(instance, key, version.config.concurrency)
        self._tasks.spawn(
            self._bring_up(instance, tracked, fresh, prewarm_until, evicting),
            f"{why} {instance.id}",
        )
        self._refill.set()
        return True

    def _start_for(self, tracked: Tracked) -> None:
        """Start as many instances as the waiting calls need, within the instance limit."""
        version = tracked.version
        key = (version.function, version.version)
        room = self.policies.settings(key[0]).max_instances - self.pool.count(key)
        needed = len(tracked.waiting) - self.pool.starting(key) if room > 0 else 0  # (no scan)
        for _ in range(max(0, min(room, math.ceil(needed / version.config.concurrency)))):
            if not self._launch(tracked, "start"):
                if self.pool.count(key) == 0:  # nothing of it runs or starts to serve them
                    self._fail_waiters(tracked, self._full(version), all_=True)
                break

    async def _bring_up(
        self,
        instance: Instance,
        tracked: Tracked,
        fresh: bool,
        prewarm_until: float | None,
        evicting: list[asyncio.Task[None]],
    ) -> None:
        try:
            if evicting:  # the room is theirs until they are stopped
                await asyncio.wait(evicting)
            await self._specialize(instance, tracked.version, fresh)
        except StartFailed as exc:
            # Back off before starting this version again, so a module that fails to import
            # is not restarted in a loop; the calls waiting for it get the error now.
            tracked.failed(exc, self.clock(), self.settings.max_start_backoff_s)
            self.pool.remove(instance)
            self._fail_waiters(tracked, exc)
            await self._drop(instance, str(exc), restart=False)
            return
        if instance.id not in self.pool.instances:  # retired while it was starting
            await self._drop(instance, "retired while starting", restart=False)
            return
        tracked.started()
        for_call = any(not fut.done() for fut in tracked.waiting)
        if prewarm_until is not None:
            self.pool.mark_prewarmed(instance, self.clock(), prewarm_until)
        else:
            self.pool.mark_ready(instance, self.clock(), for_call=for_call)
        self._hand_out(tracked, cold=True)
        if for_call and prewarm_until is None and instance.id in self.pool.instances:
            self.pool.settle(instance, self.clock())
        if self.pool.instances.get(instance.id) is instance and instance.busy == 0:
            self._wake_reaper.set()

    async def _specialize(self, instance: Instance, version: Version, fresh: bool) -> Reply:
        code = version.package.archive or version.source.encode()
        if version.sha256 and version.sha256 not in (
            code_digest(code, version.package.env_hash, version.config.preimport),
            hashlib.sha256(code).hexdigest(),
        ):  # (the digest of versions before 0.1)
            raise StartFailed(
                f'the code of "{version.function}" version {version.version} does not match '
                "its sha256: it was changed in the database outside Ember; deploy it again"
            )
        meta = specialize_meta(version, self.settings.max_response_bytes)
        if self._prepare is not None:  # first: a version that cannot run costs no instance
            try:
                prepared = await self._prepare(version)
            except Exception as exc:
                raise StartFailed(f"could not prepare the function's environment: {exc}") from exc
            add_prepared(meta, prepared)
        if fresh:
            await self._start_process(instance, version)
        try:
            live = self._live.get(instance.id)
            if live is None or live.handle is None:
                raise InstanceGone(f"instance {instance.id} is gone")
            try:
                meta["sandbox"] = self.backend.instance_spec(live.handle, version)
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
        except (OSError, InstanceGone) as exc:
            raise StartFailed(f"the instance died while importing the function: {exc}") from exc
        if not reply.get("ok"):
            conn.close()
            error: ErrorInfo = reply.get("error") or {"type": "Error", "message": ""}
            raise StartFailed(
                f"{error.get('type', 'Error')}: {error.get('message', '')}",
                error,
                reply.get("logs", ""),
            )
        self._keep_connection(instance, conn)
        if instance.id in self.pool.instances:  # (retired meanwhile: its meta is stale)
            self._keep_template(version, meta, code, reply)
        return reply

    async def _start_process(self, instance: Instance, version: Version | None = None) -> None:
        try:
            handle = await self.backend.start_instance(instance.id, version)
        except BackendError as exc:
            raise StartFailed(str(exc)) from exc
        self.starts_total += 1
        # (Dropped while it started: recorded again, so that the caller's drop stops it.)
        live = self._live.setdefault(instance.id, Live(instance))
        live.handle = handle
        self._tasks.spawn(self._watch(live), f"watch {instance.id}")

    def _fail_waiters(self, tracked: Tracked, exc: SchedulerError, *, all_: bool = False) -> None:
        key = (tracked.version.function, tracked.version.version)
        waiting = tracked.waiting
        # Calls that the instances still starting can serve keep waiting; the rest fail.
        excess = len(waiting) if all_ else len(waiting) - self.pool.starting(key)
        while excess > 0 and waiting:
            fut = waiting.pop()
            if not fut.done():
                fut.set_exception(exc)
                excess -= 1

    async def _watch(self, live: Live) -> None:
        assert live.handle is not None
        code = await live.handle.wait()
        if self._live.get(live.instance.id) is live and not self._stopping:
            how = describe_exit(code)
            log.warning("instance exited", extra={"instance": live.instance.id, "exit": how})
            await self._drop(live.instance, f"exited ({how})")

    async def _drop(self, instance: Instance, reason: str, *, restart: bool = True) -> None:
        key = instance.key
        self.pool.remove(instance)
        live = self._live.pop(instance.id, None)
        if live is not None:
            live.close_connections()
        if live is not None and live.handle is not None:
            log.info("stopping instance", extra={"instance": instance.id, "reason": reason})
            # Shielded and owned: a caller cancelled meanwhile (a shutdown) must not leave
            # the process half-stopped; `stop` waits for every stop in flight.
            stopping = asyncio.ensure_future(
                self.backend.stop_instance(live.handle, grace_s=self.settings.stop_grace_s)
            )
            self._instance_stops[stopping] = live.memory_bytes  # charged until it is stopped
            stopping.add_done_callback(self._instance_stops.pop)
            await asyncio.shield(stopping)
        tracked = None if key is None else self._versions.get(key)
        self._refill.set()  # (room for a generic instance, too, when the node was full)
        if key is None or tracked is None:
            pass
        elif restart and not self._stopping and tracked.waiting:
            self._start_for(tracked)
        elif (
            restart
            and not self._stopping
            and self._active.get(key[0]) == key
            and self.pool.count(key) < self.policies.settings(key[0]).min_warm
        ):
            self._tasks.spawn(self.ensure_warm(tracked.version), f"keep warm {key[0]}")
        elif tracked is not None:
            self._forget_if_unused(key)
        self._notify()
