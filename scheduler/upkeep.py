"""The scheduler's work beside the call path: scale to zero, prewarms, `min_warm`, the generic
pool, new policies, deleted functions, deploy-time import checks, and read-outs.

A part of `Scheduler` (which mixes it in) kept in a module of its own; the state it works on is
the scheduler's, declared below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from invoker.protocol import Reply
from scheduler.backends import Backend, BackendError
from scheduler.capacity import Room
from scheduler.errors import AtCapacity, SchedulerError, StartFailed
from scheduler.forking import Forking
from scheduler.live import (
    Checked,
    InstanceConnection,
    InstanceGone,
    Live,
    Prepare,
    Tracked,
)
from scheduler.policy import FunctionPolicy
from scheduler.pool import Instance, Pool, State, VersionKey
from scheduler.router import PolicyRouter
from scheduler.settings import PoolSettings
from scheduler.tasks import Supervisor
from store.records import Version

log = logging.getLogger("ember.scheduler")


class Upkeep(Forking):
    backend: Backend
    settings: PoolSettings
    clock: Callable[[], float]
    time_scale: float
    policies: PolicyRouter
    pool: Pool
    prewarm_starts: dict[str, int]
    evictions_total: int
    room: Room
    _changed: asyncio.Event
    _watchers: int
    _live: dict[str, Live]
    _instance_stops: dict[asyncio.Future[None], int]
    _versions: dict[VersionKey, Tracked]
    _active: dict[str, VersionKey]
    _tasks: Supervisor
    _wake_reaper: asyncio.Event
    _reaper_target: float
    _refill: asyncio.Event
    _stopping: bool
    _prepare: Prepare | None
    keeps_warm: Callable[[str], bool]

    if TYPE_CHECKING:

        def _learn(self, key: VersionKey, version: Version) -> Tracked: ...
        def _launch(
            self,
            tracked: Tracked,
            why: str,
            *,
            prewarm_until: float | None = None,
            evict: bool = True,
        ) -> bool: ...

        def _new_instance(self) -> Instance: ...
        async def _start_process(
            self, instance: Instance, version: Version | None = None
        ) -> None: ...
        def _fail_waiters(
            self, tracked: Tracked, exc: SchedulerError, *, all_: bool = False
        ) -> None: ...
        async def _drop(self, instance: Instance, reason: str, *, restart: bool = True) -> None: ...
        def _notify(self) -> None: ...
        def _take_instance(self, fork: bool = False) -> tuple[Instance, bool]: ...
        async def _specialize(self, instance: Instance, version: Version, fresh: bool) -> Reply: ...
        def _stop_soon(self, instance: Instance, reason: str) -> asyncio.Task[None]: ...
        async def _connection(self, instance: Instance) -> InstanceConnection: ...
        def _keep_connection(self, instance: Instance, conn: InstanceConnection) -> None: ...
        def _hand_out(self, tracked: Tracked, *, cold: bool) -> None: ...

    def _forget_if_unused(self, key: VersionKey) -> None:
        """Drop the record of a version another one replaced, once it runs nowhere and has no
        waiting calls and no back-off in force: each deploy would otherwise leave one (with its
        code). (A version whose function's active one is unknown is kept: it may be prewarmed.)"""
        tracked = self._versions.get(key)
        if (
            tracked is not None
            and self._active.get(key[0]) not in (None, key)
            and self.pool.count(key) == 0
            and not tracked.waiting
            and tracked.backing_off(self.clock()) is None
        ):
            del self._versions[key]

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

    def tick(self) -> None:
        """Check keep-alives and prewarms against the clock now (a fake clock moved)."""
        self._wake_reaper.set()

    def _usage(self) -> tuple[int, int]:
        """Instances charged against the node's capacity, and their memory: every instance
        with a record (in the pool, a deleted function's still busy, evicted ones not yet
        stopping) and those whose stop is in flight."""
        count = len(self._live) + len(self._instance_stops)
        memory = sum(live.memory_bytes for live in self._live.values())
        forks, fork_bytes = self._fork_sources_usage()
        return count + forks, memory + fork_bytes + sum(self._instance_stops.values())

    def _make_room(
        self, memory_bytes: int, key: VersionKey | None, *, evict: bool, fork: bool = False
    ) -> list[asyncio.Task[None]] | None:
        """Room for one more instance: None if it does not fit, else the stops of the idle
        instances evicted for it (if `evict`: calls and deploys do; prewarms and `min_warm` only
        use free room), which the new instance waits for before it starts. Templates give
        their room up first (`fork`: the instance is a fork of one, not the generic's)."""
        generic = None if fork else self.pool.take_generic()
        victims = self.room.victims_for(memory_bytes, key, generic=generic, evict=evict)
        while victims is None and self._templates and self._templates.give_template_room():
            victims = self.room.victims_for(memory_bytes, key, generic=generic, evict=evict)
        return None if victims is None else [self._evict(victim) for victim in victims]

    def _evict(self, victim: Instance) -> asyncio.Task[None]:
        """Stop an idle instance now to make room for another (the node is full)."""
        now = self.clock()
        self.pool.stopped(victim, now)
        self.pool.remove(victim)
        self.evictions_total += 1
        log.info("evicting an idle instance", extra={"instance": victim.id, "key": victim.key})
        return self._stop_soon(victim, "evicted: the node is at its capacity")

    def _full(self, version: Version) -> AtCapacity:
        cap = self.room.capacity
        if version.config.memory_bytes > cap.max_memory_bytes:
            return AtCapacity(
                f'function "{version.function}" needs {version.config.memory_bytes >> 20} MiB, '
                f"more than this node runs in all ({cap.describe()}); lower its --memory or "
                "raise FN_MAX_INSTANCES_MEMORY",
                retry_after_s=60.0,
            )
        return AtCapacity(
            f"this node is at its capacity ({cap.describe()}) and every instance is busy or "
            "kept warm on purpose; retry later, or raise FN_MAX_INSTANCES_TOTAL / "
            "FN_MAX_INSTANCES_MEMORY"
        )

    async def retire(self, function: str) -> None:
        """Stop every instance of a deleted function (busy ones once their calls end)."""
        gone = StartFailed(f'function "{function}" was deleted')
        for key in [k for k in self._versions if k[0] == function]:
            self._fail_waiters(self._versions.pop(key), gone, all_=True)
        self._active.pop(function, None)
        if self._templates is not None:
            self._templates.drop_templates(function)
        self.pool.forget(function)
        self.prewarm_starts.pop(function, None)
        self.policies.forget(function)
        idle = []
        for instance in self.pool.of_function(function):
            self.pool.remove(instance)
            if instance.busy == 0 and instance.state is not State.STARTING:
                idle.append(instance)
        await asyncio.gather(*(self._drop(i, "function deleted", restart=False) for i in idle))

    def let_go(self) -> int:
        """Stop the instances of functions no longer kept here (`keeps_warm`: their home moved
        to another gateway): idle ones now, busy ones when their calls end, not after their
        keep-alive; one still starting serves its waiting call first. Returns how many."""
        now = self.clock()
        let_go = 0
        for instance in list(self.pool.instances.values()):
            key = instance.key
            if key is None or instance.state is not State.READY or self.keeps_warm(key[0]):
                continue
            self.pool.cancel_prewarms(key[0])
            idle = instance.busy == 0
            if idle:
                self.pool.stopped(instance, now)
            self.pool.remove(instance)  # (a busy one stops when its last call ends)
            if idle:
                stop = self._drop(instance, "its home is another gateway", restart=False)
                self._tasks.spawn(stop, f"stop {instance.id}")
            let_go += 1
        if let_go:
            self._notify()
        return let_go

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
        tracked = self._versions.get(key)
        active = self._active.get(key[0])
        if tracked is None or self._stopping or (active is not None and active != key):
            return  # unknown, or no longer the active version
        if not self.keeps_warm(key[0]):
            return
        if self.pool.count(key) > 0:
            for existing in self.pool.of_function(key[0]):
                if existing.key == key and existing.busy == 0 and existing.state is State.READY:
                    existing.keep_until = max(existing.keep_until, until)
            return
        if self._launch(tracked, "prewarm", prewarm_until=until, evict=False):
            self.prewarm_starts[key[0]] = self.prewarm_starts.get(key[0], 0) + 1

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
            if (
                self.policies.keeps_for_keep_alive(instance.key[0])
                or instance.keep_until == math.inf
            ):
                # (inf: kept for a min_warm that may have been lowered)
                instance.keep_until = instance.idle_since + settings.keep_alive_s
            elif (bound_s := self.policies.keep_alive_bound_s(instance.key[0])) is not None:
                instance.keep_until = min(instance.keep_until, instance.idle_since + bound_s)
        self._wake_reaper.set()

    async def ensure_warm(self, version: Version) -> None:
        """Note `version` as its function's active one, and start instances of it up to the
        function's `min_warm` (within `max_instances`)."""
        key = (version.function, version.version)
        previous = self._active.get(version.function)
        self._active[version.function] = key
        tracked = self._learn(key, version)
        if previous is not None and previous != key:
            self._forget_if_unused(previous)
            if self._templates is not None:  # (rollback, redeploy: the old one's is of no use)
                self._templates.drop_templates(version.function, keep_version=key[1])
        if previous != key:
            self.pool.cancel_prewarms(version.function)
        if (
            self._stopping
            or self.start_backoff_remaining_s(key) > 0
            or not self.keeps_warm(version.function)
        ):
            return
        settings = self.policies.settings(version.function)
        missing = min(settings.min_warm, settings.max_instances) - self.pool.count(key)
        for _ in range(max(0, missing)):
            if not self._launch(tracked, "keep warm", evict=False):
                log.warning(
                    "no room to keep instances warm",
                    extra={"function": version.function, "capacity": self.room.capacity.describe()},
                )
                break
        self._refill.set()

    async def _refiller(self) -> None:
        while True:
            await self._refill.wait()
            self._refill.clear()
            while (
                not self._stopping
                and self.pool.generic_ready() < self.settings.generic_pool_size
                and self.room.generic_fits()
            ):
                instance = self._new_instance()
                try:
                    await self._start_process(instance)
                except StartFailed as exc:
                    self.pool.remove(instance)
                    self._live.pop(instance.id, None)
                    log.error("cannot prewarm a generic instance: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                if instance.id in self.pool.instances:
                    self.pool.mark_generic(instance)
                    self._notify()

    # -- deploy-time checks -----------------------------------------------------------------

    async def check(self, version: Version) -> Checked:
        """Import a version in an instance of its own, before it is stored.

        Raises `StartFailed` with the import error. On success the instance is kept aside;
        `admit` makes it the first warm instance of the stored version, `drop_checked_soon`
        stops it.
        """
        fork = self._forkable(version)  # (of its trusted environment's zygote, if ready)
        evicting = self._make_room(version.config.memory_bytes, None, evict=True, fork=fork)
        if evicting is None:
            raise self._full(version)
        instance, fresh = self._take_instance(fork)
        self._live[instance.id].memory_bytes = version.config.memory_bytes
        instance.state = State.STARTING
        self._refill.set()
        try:
            if evicting:  # the room is theirs until they are stopped
                await asyncio.wait(evicting)
            reply = await self._specialize(instance, version, fresh)
        except BaseException as exc:  # failed, or the deploy request was cancelled
            self._stop_soon(instance, f"import check: {exc!r}")
            raise
        instance.concurrency = version.config.concurrency
        style = reply.get("style") or version.config.style
        return Checked(
            instance,
            style="ember" if style == "auto" else style,
            entry=reply.get("entry") or version.config.entry,
            style_options=dict(reply.get("style_options") or version.config.style_options),
            slow_import=self.slow_import(reply),
        )

    async def admit(self, checked: Checked, version: Version) -> None:
        """Make a checked instance the first warm instance of `version` (or drop it)."""
        instance = checked.instance
        try:
            conn = await self._connection(instance)
            async with asyncio.timeout(self.settings.specialize_timeout_s):
                reply, _ = await conn.call({"op": "relabel", "version": version.version})
        except BaseException as exc:
            # The version is stored and active either way; the first call starts an instance.
            self.drop_checked_soon(checked)
            if isinstance(exc, Exception):
                log.warning("checked instance lost before it served: %r", exc)
                return
            raise
        if not reply.get("ok"):
            conn.close()
            self.drop_checked_soon(checked)
            return
        self._keep_connection(instance, conn)
        live = self._live.get(instance.id)
        if live is not None and live.handle is not None:
            try:  # checked as a candidate (version 0): say which version it serves now
                await self.backend.relabel_instance(live.handle, version)
            except BackendError as exc:
                log.warning("cannot relabel a checked instance: %s", exc)
        key = (version.function, version.version)
        tracked = self._learn(key, version)
        self.pool.relabel(instance, key)
        self.pool.mark_ready(instance, self.clock())
        self._hand_out(tracked, cold=True)
        self._wake_reaper.set()
        if self._templates is not None and checked.slow_import:
            # (the check imported it as version 0: its template, if its import was slow)
            self._tasks.spawn(self._template_of(version, checked), f"template of {key}")
        else:
            tracked.imports += 1

    def drop_checked_soon(self, checked: Checked, reason: str = "deploy did not complete") -> None:
        self._stop_soon(checked.instance, reason)

    # -- read-outs --------------------------------------------------------------------------

    def instance_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in State}
        for instance in self.pool.instances.values():
            state = "busy" if instance.busy else instance.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    def waiting(self, key: VersionKey) -> int:
        """Calls of a version waiting for a slot."""
        tracked = self._versions.get(key)
        return len(tracked.waiting) if tracked else 0

    def start_backoff_remaining_s(self, key: VersionKey) -> float:
        """How long calls of a version that failed to start still fail fast."""
        tracked = self._versions.get(key)
        if tracked is None or tracked.backoff_error is None:
            return 0.0
        return max(0.0, tracked.backoff_until - self.clock())

    def instances_of(self, function: str) -> list[Instance]:
        return self.pool.of_function(function)

    def knows(self, function: str) -> bool:
        """Whether anything of `function` is here: instances, waiting calls, an active
        version (false again once it was retired)."""
        return (
            function in self._active
            or bool(self.pool.of_function(function))
            or any(k[0] == function for k in self._versions)
        )

    def pid_of(self, instance: Instance) -> int | None:
        """The process that stands for an instance on this machine (local backend), if any."""
        live = self._live.get(instance.id)
        pid = getattr(live.handle if live else None, "pid", None)
        return pid if isinstance(pid, int) else None

    def address_of(self, instance: Instance) -> str:
        """Where an instance listens: `host:port`, or `unix:/path`."""
        live = self._live.get(instance.id)
        if live is None or live.handle is None:
            raise InstanceGone(f"instance {instance.id} is gone")
        handle = live.handle
        return handle.host if handle.host.startswith("unix:") else f"{handle.host}:{handle.port}"
