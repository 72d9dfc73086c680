"""The scheduler process on Kubernetes (`python -m scheduler`): the pod broker for the gateways.

One replica is the leader (a Postgres advisory lock, `store.leader`); it writes the address it
listens on to Postgres (`EMBER_SCHEDULER_ADVERTISE`), where gateways look it up, so standby
replicas can be ready (a rollout completes) without getting requests: they answer 503 to any.
The leader runs the `PodPool` (generic pods kept ready, claims, the watch) and serves the
gateways over HTTP:

- `POST /v1/instances` {gateway, function, version, memory_bytes, timeout_s}: a ready pod for the
  version, owned by that gateway: {name, host, port}. The gateway pushes the code to it.
- `PATCH /v1/instances/NAME` {gateway, function, version}: a pod a deploy checked (as version 0)
  now serves that version: its labels say so.
- `DELETE /v1/instances/NAME`: the gateway's policy let the instance go (scale down or to zero).
- `GET /v1/gateways/ID/events`: a stream of NDJSON lines, first the gateway's recent deaths
  (`{"gone": NAME, "reason": ..., "exit_code": N}`, so none is missed across a reconnect), then
  `{"pods": [...]}` (what the gateway owns, repeated every 15 s so a gateway gives back a pod it
  does not hold), then `{"gone": ...}` when a pod dies. The stream doubles as the gateway's
  heartbeat: pods of a gateway that stays away for `orphan_grace_s` are deleted.
- `GET /healthz` (the process is up; says whether it leads), `GET /metrics` (Prometheus).

Every request but the probes needs `Authorization: Bearer $FN_SCHEDULER_TOKEN`. Within the pool
policy of each gateway (keep-alive, prewarming) runs in the gateway (`scheduler.scheduler`);
this process decides which pod serves, and owns every Kubernetes call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from config.env import Env, SettingsError, default_of
from scheduler.backends.kubernetes import (
    GATEWAY_LABEL,
    KubernetesError,
    KubernetesSettings,
    PodPool,
    PodView,
    label_value,
)
from store import Store
from store.errors import StoreError
from store.leader import Leadership

log = logging.getLogger("ember.scheduler.service")


@dataclass(slots=True, frozen=True, kw_only=True)
class ServiceSettings:
    database_url: str
    """Postgres, for the leader lock only (DATABASE_URL)."""
    token: str
    """What gateways present (FN_SCHEDULER_TOKEN); a Secret in deploy/."""
    host: str = "127.0.0.1"
    """Listen address (EMBER_SCHEDULER_HOST); 0.0.0.0 in a pod."""
    port: int = 8081
    """Listen port (EMBER_SCHEDULER_PORT)."""
    advertise: str = ""
    """The URL gateways use to reach this replica when it leads (EMBER_SCHEDULER_ADVERTISE);
    default http://HOST:PORT, in a pod http://$(POD_IP):PORT (deploy/ sets it)."""
    kubeconfig: str | None = None
    """A kubeconfig file (KUBECONFIG); default: the pod's service account."""
    orphan_grace_s: float = 60.0
    """Pods of a gateway that has not been connected for this long are deleted
    (EMBER_ORPHAN_GRACE, seconds)."""
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServiceSettings:
        read = Env(env)
        backend = read.text("EMBER_BACKEND", "kubernetes")
        if backend != "kubernetes":
            raise SettingsError(
                f"EMBER_BACKEND={backend!r}: the scheduler process is for EMBER_BACKEND="
                "kubernetes; with the local backend the scheduler runs inside `fn up`"
            )
        missing = [n for n in ("DATABASE_URL", "FN_SCHEDULER_TOKEN") if n not in read]
        if missing:
            raise SettingsError(f"{' and '.join(missing)} must be set (see deploy/)")
        d = KubernetesSettings()
        host = read.text("EMBER_SCHEDULER_HOST", default_of(cls, "host"))
        port = read.at_least("EMBER_SCHEDULER_PORT", default_of(cls, "port"))
        advertise = read.text("EMBER_SCHEDULER_ADVERTISE").strip()
        if not advertise:
            if host in ("0.0.0.0", "::"):
                raise SettingsError(
                    "EMBER_SCHEDULER_ADVERTISE must be set when listening on "
                    f"{host}: the URL gateways reach this replica at"
                )
            advertise = f"http://{host}:{port}"
        memory_mib = read.at_least("EMBER_GENERIC_MEMORY_MIB", d.generic_memory_bytes >> 20, 32)
        grace_s = int(default_of(cls, "orphan_grace_s"))
        return cls(
            database_url=read.secret("DATABASE_URL") or "",
            token=read.secret("FN_SCHEDULER_TOKEN") or "",
            host=host,
            port=port,
            advertise=advertise,
            kubeconfig=read.optional("KUBECONFIG"),
            orphan_grace_s=float(read.at_least("EMBER_ORPHAN_GRACE", grace_s, 1)),
            kubernetes=KubernetesSettings(
                namespace=read.text("EMBER_NAMESPACE", d.namespace),
                image=read.text("EMBER_INVOKER_IMAGE", d.image),
                generic_pool_size=read.at_least("EMBER_GENERIC_POOL", d.generic_pool_size),
                generic_memory_bytes=memory_mib << 20,
                env_dir_bytes=read.at_least("EMBER_ENV_DIR_MIB", d.env_dir_bytes >> 20, 64) << 20,
                owner_configmap=read.text("EMBER_OWNER_CONFIGMAP", d.owner_configmap),
                access_check_s=float(read.at_least("EMBER_ACCESS_CHECK", int(d.access_check_s), 1)),
            ),
        )


RECENTLY_GONE = 256


class Broker:
    """The HTTP face of the pod pool, and the gateways' heartbeats."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.pool: PodPool | None = None
        self.streams: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.last_seen: dict[str, float] = {}
        self.recently_gone: dict[str, dict[str, dict[str, Any]]] = {}
        """Per gateway, the last `RECENTLY_GONE` pods that died, as their "gone" message: sent
        again when the gateway's stream reconnects, so a death (and its exit code) that happened
        while it was down is not reported as "unknown to the scheduler"."""
        self.started = time.monotonic()

    def attach(self, pool: PodPool) -> None:
        self.pool = pool
        self.started = time.monotonic()
        pool.on_gone.append(self._gone)

    def _gone(self, pod: PodView, reason: str) -> None:
        gateway = pod.labels.get(GATEWAY_LABEL, "")
        message: dict[str, Any] = {"gone": pod.name, "reason": reason}
        if pod.exit_code is not None:
            message["exit_code"] = pod.exit_code
        recent = self.recently_gone.setdefault(gateway, {})
        recent[pod.name] = message
        while len(recent) > RECENTLY_GONE:
            del recent[next(iter(recent))]
        for queue in self.streams.get(gateway, ()):
            queue.put_nowait(message)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/instances", self._claim)
        app.router.add_delete("/v1/instances/{name}", self._release)
        app.router.add_patch("/v1/instances/{name}", self._relabel)
        app.router.add_get("/v1/gateways/{gateway}/events", self._events)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in ("/healthz", "/livez", "/metrics"):
            return await handler(request)  # type: ignore[no-any-return]
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.settings.token}".encode()):
            return web.json_response({"error": "missing or wrong scheduler token"}, status=401)
        if self.pool is None:
            return web.json_response({"error": "this scheduler is not the leader"}, status=503)
        return await handler(request)  # type: ignore[no-any-return]

    async def _livez(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.pool is None:
            return web.json_response({"leader": False})
        return web.json_response(
            {"leader": True, "generic_ready": len(self.pool.generic(ready_only=True))}
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# TYPE ember_scheduler_leader gauge",
            f"ember_scheduler_leader {int(self.pool is not None)}",
        ]
        pool = self.pool
        if pool is not None:
            states: dict[str, int] = {}
            for pod in pool.pods.values():
                key = "dead" if pod.dead else ("ready" if pod.usable() else "starting")
                state = f'state="{pod.state or "unknown"}",phase="{key}"'
                states[state] = states.get(state, 0) + 1
            lines.append("# TYPE ember_invoker_pods gauge")
            lines += [f"ember_invoker_pods{{{k}}} {v}" for k, v in sorted(states.items())]
            lines.append(
                "# HELP ember_pod_claims_total Pods handed to gateways, by source: "
                "a ready generic pod, or a pod created (a pod start)."
            )
            lines.append("# TYPE ember_pod_claims_total counter")
            lines += [
                f'ember_pod_claims_total{{source="{k}"}} {v}' for k, v in pool.claims_total.items()
            ]
            lines.append("# TYPE ember_pods_created_total counter")
            lines.append(f"ember_pods_created_total {pool.created_total}")
            lines.append("# TYPE ember_pods_gone_total counter")
            lines.append(f"ember_pods_gone_total {pool.gone_total}")
            lines.append("# TYPE ember_pod_watch_relists_total counter")
            lines.append(f"ember_pod_watch_relists_total {pool.relists_total}")
        return web.Response(
            text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8"
        )

    async def _claim(self, request: web.Request) -> web.Response:
        assert self.pool is not None
        try:
            body = await request.json()
            gateway, function = str(body["gateway"]), str(body["function"])
            version = int(body["version"])
            memory_bytes, timeout_s = int(body["memory_bytes"]), float(body["timeout_s"])
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad instance request: {exc}"}, status=400)
        try:
            pod = await self.pool.claim(
                gateway=gateway,
                function=function,
                version=version,
                memory_bytes=memory_bytes,
                timeout_s=timeout_s,
            )
        except KubernetesError as exc:
            log.error(
                "cannot provide an invoker pod", extra={"function": function, "error": str(exc)}
            )
            return web.json_response({"error": str(exc)}, status=503)
        host, port = self.pool.address(pod)
        return web.json_response({"name": pod.name, "host": host, "port": port}, status=201)

    async def _relabel(self, request: web.Request) -> web.Response:
        assert self.pool is not None
        try:
            body = await request.json()
            gateway, function = str(body["gateway"]), str(body["function"])
            version = int(body["version"])
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad relabel request: {exc}"}, status=400)
        try:
            await self.pool.relabel(
                request.match_info["name"], gateway=gateway, function=function, version=version
            )
        except KubernetesError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.Response(status=204)

    async def _release(self, request: web.Request) -> web.Response:
        assert self.pool is not None
        try:
            await self.pool.release(request.match_info["name"])
        except KubernetesError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.Response(status=204)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        assert self.pool is not None
        gateway = label_value(request.match_info["gateway"])
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.streams.setdefault(gateway, set()).add(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            owned = [p.name for p in self.pool.owned_by(gateway)]
            # The deaths it may have missed first: the snapshot takes what it lists for lost.
            for gone in list(self.recently_gone.get(gateway, {}).values()):
                await response.write(orjson.dumps(gone) + b"\n")
            await response.write(orjson.dumps({"pods": owned}) + b"\n")
            while True:
                try:
                    async with asyncio.timeout(15.0):
                        message = await queue.get()
                except TimeoutError:  # a keep-alive, which also lets the gateway reconcile
                    message = {"pods": [p.name for p in self.pool.owned_by(gateway)]}
                if message is None:
                    break
                await response.write(orjson.dumps(message) + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            streams = self.streams.get(gateway, set())
            streams.discard(queue)
            if not streams:
                self.streams.pop(gateway, None)
                self.last_seen[gateway] = time.monotonic()
        return response

    async def collect_orphans(self) -> list[str]:
        """Delete the pods of gateways gone for longer than the grace period."""
        assert self.pool is not None
        now = time.monotonic()
        deleted = []
        for pod in list(self.pool.pods.values()):
            gateway = pod.labels.get(GATEWAY_LABEL)
            if gateway is None or pod.dead or gateway in self.streams:
                continue
            if now - self.last_seen.get(gateway, self.started) > self.settings.orphan_grace_s:
                log.warning(
                    "deleting the pod of a gateway that is gone",
                    extra={"pod": pod.name, "gateway": gateway},
                )
                try:
                    await self.pool.release(pod.name)
                except KubernetesError as exc:
                    log.warning("cannot delete a pod", extra={"pod": pod.name, "error": str(exc)})
                    continue
                deleted.append(pod.name)
        return deleted

    async def close_streams(self) -> None:
        for queues in self.streams.values():
            for queue in queues:
                queue.put_nowait(None)


async def serve(settings: ServiceSettings, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` (or SIGTERM/SIGINT); non-zero when leadership or the pool was lost."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    broker = Broker(settings)
    runner = web.AppRunner(broker.app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("scheduler listening", extra={"address": f"{settings.host}:{settings.port}"})
    leadership: Leadership | None = None
    pool: PodPool | None = None
    code = 0
    try:
        store = await Store.connect(settings.database_url, min_size=1, max_size=1)
        try:
            await store.migrate()  # the leader's table may be new; the gateways do the same
        finally:
            await store.close()
        acquiring = asyncio.create_task(
            Leadership.acquire(settings.database_url), name="leader election"
        )
        stopping = asyncio.create_task(stop.wait(), name="stop signal")
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquiring
            return 0
        leadership = acquiring.result()
        log.info("this scheduler is the leader", extra={"address": settings.advertise})
        pool = PodPool(PodPool.load_client(settings.kubeconfig), settings.kubernetes)
        await pool.start()
        broker.attach(pool)
        await leadership.advertise(settings.advertise)
        lost = asyncio.create_task(leadership.lost.wait(), name="leadership watch")
        broken = asyncio.create_task(pool.broken.wait(), name="pod pool watch")
        while not stop.is_set():
            sweep_s = min(10.0, settings.orphan_grace_s / 2)
            done, _ = await asyncio.wait(
                {stopping, lost, broken}, timeout=sweep_s, return_when=asyncio.FIRST_COMPLETED
            )
            if lost in done:
                log.critical("lost the leader lock; stopping so another scheduler takes over")
                code = 1
                break
            if broken in done:
                log.critical("the pod pool failed: %s", pool.failed)
                denied = isinstance(pool.failed, KubernetesError) and pool.failed.denied
                code = 2 if denied else 1  # 2: as when the permissions are missing at start
                break
            await broker.collect_orphans()
        for task in (lost, broken, stopping):
            task.cancel()
    except KubernetesError as exc:
        log.critical("%s", exc)
        code = 2
    except StoreError as exc:
        log.critical("%s", exc)
        code = 1
    finally:
        await broker.close_streams()
        await runner.cleanup()
        if pool is not None:
            await pool.close()
        if leadership is not None:
            await leadership.release()
    return code
