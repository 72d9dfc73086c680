"""One running platform: store, scheduler, function cache, activation writer, metrics.

`Platform.start` brings the parts up in order and `stop` takes them down in reverse; the HTTP
app and `fn up` are thin layers over it, so tests run the very same thing in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from builds.builder import Builder
from calls.activations import ActivationWriter
from calls.execute import CallPath
from calls.functions import FunctionCache
from calls.metrics import Metrics, PoolReadout
from calls.spool import ActivationSpool, replay_spool
from events.recovery import GatewayRun
from events.system import EventSystem
from gateway.env_tokens import EnvTokens
from gateway.handoff import Handoff
from gateway.keyring import KeyRing
from gateway.policy_settings import reload_policies
from gateway.retention import Pruner
from gateway.routing import Router
from gateway.settings import Settings
from gateway.state_dir import lock_state_dir
from gateway.vault import Vault, with_secrets
from scheduler.backends import Backend
from scheduler.backends.local import LocalBackend
from scheduler.backends.remote import RemoteBackend
from scheduler.scheduler import Prepare, Prepared, Scheduler
from scheduler.tasks import Supervisor
from store import Store, Version
from store.changes import (
    AccessChanged,
    Change,
    FunctionChanged,
    PolicyChanged,
    SecretRotated,
    TriggersChanged,
    TrustChanged,
)
from store.embedded import EmbeddedPostgres, start_embedded_postgres
from store.errors import FunctionNotFound

log = logging.getLogger("ember.gateway")


def load_or_create_token(path: Path) -> str:
    """The admin token kept in `path` (mode 0600), created on first start."""
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def _pool_readout(scheduler: Scheduler) -> PoolReadout:
    pool = scheduler.pool
    warm: dict[str, int] = {}
    for instance in pool.instances.values():
        if instance.key is not None:
            warm[instance.key[0]] = warm.get(instance.key[0], 0) + 1
    return PoolReadout(
        warm=warm,
        idle_s=dict(pool.idle_s),
        prewarm_starts=dict(scheduler.prewarm_starts),
        prewarm_outcomes=dict(pool.prewarm_outcomes),
        evictions=scheduler.evictions_total,
        memory_bytes=scheduler.room.usage()[1],
        capacity_instances=scheduler.room.capacity.max_instances,
        capacity_memory_bytes=scheduler.room.capacity.max_memory_bytes,
    )


@dataclass(slots=True)
class Platform:
    settings: Settings
    store: Store
    scheduler: Scheduler
    functions: FunctionCache
    activations: ActivationWriter
    metrics: Metrics
    token: str
    builder: Builder
    calls: CallPath
    events: EventSystem
    tasks: Supervisor
    """The platform's background tasks; if a critical one stops, the platform is broken."""
    env_tokens: EnvTokens
    """Tokens that let invoker pods fetch an environment (Kubernetes)."""
    keys: KeyRing
    """API keys and namespaces, in memory (gateway/auth.py checks them)."""
    vault: Vault
    """Encrypts and decrypts secrets."""
    router: Router
    """Sends a call to its function's home gateway (gateway/routing.py)."""
    handoff: Handoff
    """Runs a delivery at its function's home gateway (gateway/handoff.py)."""
    _exits: contextlib.AsyncExitStack
    """Stops what `start` started, in reverse."""
    embedded: EmbeddedPostgres | None = None
    deleting: set[str] = field(default_factory=set)
    """Functions this gateway is deleting: it retires them itself, before it answers."""
    rolling: set[str] = field(default_factory=set)
    """Functions whose instances this gateway rolls itself (a secret rotated here)."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set as the gateway begins to stop: streams (`fn logs --follow`, the dashboard's) end
    then, rather than hold the stop for `shutdown_timeout_s` as the calls in flight may."""
    served: dict[str, int] = field(default_factory=dict)
    """The ports it serves on, once bound: "calls" (the gateway's), "dashboard" (its own
    origin). Set by the server (gateway/server.py, or a test's)."""
    _policy_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _trust_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def start(cls, settings: Settings) -> Platform:
        """Start every part in order; if one fails, what started is stopped again."""
        lock = lock_state_dir(settings.state_dir)  # StateDirInUse: another platform runs there
        async with contextlib.AsyncExitStack() as exits:
            exits.callback(lock.release)  # last, after the embedded Postgres has stopped
            token = settings.token or load_or_create_token(settings.state_dir / "token")
            embedded = None
            url = settings.database_url
            if url is None:
                embedded = await asyncio.to_thread(
                    start_embedded_postgres, settings.state_dir / "pgdata"
                )
                exits.push_async_callback(asyncio.to_thread, embedded.stop)
                url = embedded.url
            store = await Store.connect(url)
            exits.push_async_callback(store.close)
            await store.migrate()
            builder = Builder(
                store,
                settings.state_dir / "envs",
                timeout_s=settings.build_timeout_s,
                max_env_bytes=settings.max_env_bytes,
            )
            await asyncio.to_thread(builder.remove_leftovers)
            backend = _backend(settings, store)
            env_tokens = EnvTokens(token, ttl_s=settings.env_token_ttl_s)
            vault = Vault.from_environment(
                settings.state_dir, generate=settings.backend != "kubernetes"
            )
            keys = KeyRing(store)
            await keys.reload()
            scale = settings.time_scale
            scheduler = Scheduler(
                backend,
                settings.pool,
                prepare=with_secrets(_preparer(settings, builder, env_tokens), vault, store),
                clock=time.monotonic if scale == 1 else lambda: time.monotonic() * scale,
                time_scale=scale,
            )
            exits.push_async_callback(scheduler.stop)
            await scheduler.start()
            if isinstance(backend, LocalBackend):  # builds run package code: walled in the same
                builder.confine = backend.confine_command
                builder.release_confined = backend.release_build
            if isinstance(backend, LocalBackend) and backend.env_zygotes is not None:
                backend.env_zygotes.locate = builder.local_path  # (fn env trust: made lazily)
                backend.env_zygotes.max_zygotes = settings.env_zygotes
            functions = FunctionCache(store)
            spool = ActivationSpool(settings.state_dir / "activations.spool")
            exits.callback(spool.close)
            await replay_spool(spool, store)  # what a killed run on this state dir left
            activations = ActivationWriter(store, spool=spool)
            exits.push_async_callback(_flush, activations)
            metrics = Metrics(
                scheduler.instance_counts,
                lambda: scheduler.starts_total,
                lambda: activations.dropped,
                lambda: _pool_readout(scheduler),
            )
            calls = CallPath(
                scheduler=scheduler, functions=functions, activations=activations, metrics=metrics
            )
            tasks = Supervisor(log)
            exits.push_async_callback(tasks.close)
            run = GatewayRun(name=settings.gateway_id, home=lock.home)
            router = Router(
                store,
                run_id=run.id,
                name=settings.gateway_id,
                settings=settings.routing,
                silent_s=settings.events.gateway_dead_after_s,
                token=token,
                registry=metrics.registry,
            )
            exits.push_async_callback(router.close)
            scheduler.keeps_warm = router.keeps_ahead
            handoff = Handoff(
                router,
                calls,
                token=token,
                lease_margin_s=settings.events.lease_margin_s,
                registry=metrics.registry,
            )
            events = EventSystem(
                store, calls, settings.events, run, cipher=vault, run_call=handoff.run
            )
            await events.register()
            exits.push_async_callback(events.deregister)  # after its claims are given back
            exits.push_async_callback(router.withdraw)  # (the server withdraws it sooner)
            exits.push_async_callback(events.stop, settings.shutdown_timeout_s)
            # First when stopping: the tasks that end from now on are stopped, not failed.
            exits.callback(setattr, tasks, "closing", True)
            platform = cls(
                settings=settings,
                store=store,
                scheduler=scheduler,
                functions=functions,
                builder=builder,
                activations=activations,
                token=token,
                embedded=embedded,
                metrics=metrics,
                calls=calls,
                events=events,
                tasks=tasks,
                env_tokens=env_tokens,
                keys=keys,
                vault=vault,
                router=router,
                handoff=handoff,
                _exits=exits,
            )
            router.listeners.append(platform._homes_read)
            tasks.spawn(activations.run(), "activation writer", critical=True)
            events.start(tasks)
            pruner = Pruner(
                store,
                settings.retention,
                delivery_age_s=settings.events.retention_s,
                pruned_rows=metrics.pruned_rows,
            )
            tasks.spawn(pruner.run(), "retention", critical=True)
            if settings.routing.enabled:
                tasks.spawn(router.run(), "gateway homes", critical=True)
            tasks.spawn(
                store.listen_function_changes(
                    platform._on_change,
                    platform._on_listening,
                    on_deliveries=events.wake_deliveries,
                ),
                "function change listener",
                critical=True,
            )
            if settings.routing.enabled:  # (the peers, before min_warm: see `keeps_ahead`)
                await router.refresh()
            await platform.reload_policies()
            await platform.reload_trusted()
            platform._exits = exits.pop_all()
            return platform
        raise AssertionError("unreachable")  # (mypy: the stack does not swallow errors)

    def triggers_changed(self) -> None:
        self.events.triggers_changed()

    def _on_change(self, change: Change) -> None:
        match change:
            case PolicyChanged():
                self._reload_policies_soon()
            case TriggersChanged():
                self.triggers_changed()
            case FunctionChanged(function=name, version=number):
                if not self.functions.is_active(name, number):
                    self.functions.invalidate(name)
                    self.tasks.spawn(self._follow(name, number), f"follow {name}")
            case AccessChanged():
                self.tasks.spawn(self.keys.reload(), "key reload")
            case SecretRotated(functions=names):
                for name in names:
                    if name not in self.rolling and self.scheduler.knows(name):
                        self.tasks.spawn(self.roll(name), f"roll {name}")
            case TrustChanged():
                self.tasks.spawn(self.reload_trusted(), "trusted environments reload")

    async def roll(self, name: str) -> None:
        """Replace the instances of `name` (a secret it reads changed): new ones specialize
        with the new values; calls waiting for an instance meanwhile fail and may retry."""
        await self.scheduler.retire(name)
        await self.reload_policies()  # (retiring forgot the function's policy)
        with contextlib.suppress(FunctionNotFound):
            await self.scheduler.ensure_warm(await self.functions.resolve(name))

    async def _follow(self, name: str, version: int) -> None:
        """Another gateway deployed, rolled back or deleted `name` (or this one did, and the
        notification is its echo): bring this gateway's instances in line, as the change's own
        gateway did: retire a deleted function, keep the new active version at `min_warm`."""
        if version == 0:
            if name not in self.deleting and self.scheduler.knows(name):
                await self.scheduler.retire(name)
            return
        try:
            active = await self.functions.resolve(name)
        except FunctionNotFound:
            return  # deleted meanwhile: its own notification follows
        await self.scheduler.ensure_warm(active)

    def _homes_read(self, changed: bool) -> None:
        """The list of gateway homes was read: stop the instances of the functions whose home
        is now another gateway (docs/kubernetes.md, "Scaling gateways"); when the homes
        changed, keep the functions that moved here at their `min_warm`. Not before this
        gateway advertised nor while it stops: nothing moves then."""
        if self.router.address is not None:
            self.scheduler.let_go()
        if changed:
            self._reload_policies_soon()

    def _on_listening(self) -> None:
        # Changes made while not listening are unknown: forget what they could have changed.
        self.functions.clear()
        self.tasks.spawn(self.keys.reload(), "key reload")
        self._reload_policies_soon()
        self.tasks.spawn(self.reload_trusted(), "trusted environments reload")
        self.events.triggers_changed()
        self.events.wake_deliveries()

    def _reload_policies_soon(self) -> None:
        self.tasks.spawn(self.reload_policies(), "policy reload")

    async def reload_policies(self) -> None:
        """Apply the stored policies to this gateway's scheduler."""
        async with self._policy_lock:  # one at a time, so the newest read is applied last
            await reload_policies(self.store, self.scheduler, self.functions, self.settings.pool)

    async def reload_trusted(self) -> None:
        """Apply the stored trusted environments to this node's zygotes (at start, and when
        any gateway trusts or untrusts one: `fn env trust`)."""
        backend = self.scheduler.backend
        if not isinstance(backend, LocalBackend) or backend.env_zygotes is None:
            return
        async with self._trust_lock:  # one at a time, so the newest read is applied last
            rows = await self.store.list_trusted_environments()
            backend.env_zygotes.follow({t.hash: t.modules for t in rows})

    async def wait_broken(self) -> str:
        """Wait until a part of the platform dies; returns why."""
        waits = [
            asyncio.create_task(self.tasks.broken.wait(), name="platform tasks watch"),
            asyncio.create_task(self.scheduler.broken.wait(), name="scheduler watch"),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self.failure() or "a background task stopped"

    def isolation(self) -> dict[str, Any] | None:
        """Which protections local instances have (None on Kubernetes: the pod is the wall)."""
        backend = self.scheduler.backend
        if not isinstance(backend, LocalBackend):
            return None
        return {**backend.report.as_json(), "incidents": backend.incidents}

    def isolation_summary(self) -> str | None:
        backend = self.scheduler.backend
        return backend.report.summary() if isinstance(backend, LocalBackend) else None

    def failure(self) -> str | None:
        """Why the platform can no longer work, if a part of it died."""
        backend = self.scheduler.backend
        if isinstance(backend, LocalBackend) and backend.zygote_failure is not None:
            return backend.zygote_failure + "; it is replaced at the next instance start"
        if self.tasks.failed_task is not None:
            return f"background task {self.tasks.failed_task!r} stopped"
        if self.scheduler.failed is not None:
            return f"scheduler failed: {self.scheduler.failed!r}"
        return None

    async def stop(self) -> None:
        """Stop taking events, let claimed deliveries finish (`shutdown_timeout_s`), stop the
        background tasks, write the last activation records, then the scheduler, the store and
        the embedded Postgres."""
        await self._exits.aclose()


async def _flush(activations: ActivationWriter) -> None:
    try:
        await activations.flush()
        while activations.backlog:  # records of calls that ended during that COPY
            await activations.flush()
    except Exception:
        log.exception("could not write the last activation records")


def _backend(settings: Settings, store: Store) -> Backend:
    if settings.backend == "kubernetes":
        assert settings.scheduler_token is not None
        fixed_url = settings.scheduler_url

        async def locate() -> str | None:
            return fixed_url or await store.scheduler_address()

        return RemoteBackend(locate, settings.scheduler_token, settings.gateway_id)
    return LocalBackend(
        zygote=settings.zygote,
        templates=settings.templates,
        max_templates=settings.max_templates,
        isolation=settings.isolation,
        private_paths=(settings.state_dir,),
        environments=settings.state_dir / "envs",
    )


def _preparer(settings: Settings, builder: Builder, tokens: EnvTokens) -> Prepare:
    async def prepare(version: Version) -> Prepared:
        env_hash = version.package.env_hash
        if env_hash is None:
            return {}
        if settings.backend != "kubernetes":
            return {"paths": [str(await builder.local_path(env_hash))]}
        # A pod fetches it itself, with a token for this environment only (docs/kubernetes.md).
        if settings.env_url is None:
            raise ValueError(
                "set EMBER_ENV_URL (deploy/ sets it to the node environment cache): invoker "
                "pods fetch the environments of functions with requirements from there"
            )
        archive = await builder.archives.get(env_hash)
        return {
            "environment": {
                "hash": env_hash,
                "sha256": archive.sha256,
                "size_bytes": archive.size_bytes,
                "url": f"{settings.env_url}/environments/{env_hash}",
                "token": tokens.issue(env_hash),
            }
        }

    return prepare


PLATFORM = web.AppKey("platform", Platform)
