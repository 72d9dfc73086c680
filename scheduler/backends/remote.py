"""The gateway's side of the Kubernetes backend: instances are pods the scheduler process hands out.

`start_instance` asks the scheduler (`scheduler.service`) for a ready pod for the version, and
the gateway's own scheduler then pushes the code to it over the invoker protocol, as it does
with a local instance. `stop_instance` gives the pod back (the scheduler deletes it). One
long-lived event stream tells which pods died (`wait` returns) and, being open, keeps this
gateway's pods from being collected as orphans. No Kubernetes credentials are needed here.

The scheduler's address comes from `locate` (the leader writes it to Postgres), looked up again
whenever the scheduler cannot be reached or says it is not the leader (after a failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from invoker.specs import SpecializeSpec
from scheduler.backends import BackendError, InstanceHandle
from store.records import Version

log = logging.getLogger("ember.scheduler.remote")


class _Moved(Exception):
    """The scheduler known is gone or no longer leads: look it up again."""


@dataclass(slots=True, eq=False)
class PodHandle:
    host: str
    port: int
    name: str
    gone: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    exit_code: int | None = None
    """The pod's container exit code, when the scheduler reported it gone with one."""

    async def wait(self) -> int | None:
        await asyncio.shield(self.gone)
        return self.exit_code


class RemoteBackend:
    def __init__(
        self,
        locate: Callable[[], Awaitable[str | None]],
        token: str,
        gateway_id: str,
        *,
        request_timeout_s: float = 180.0,
    ) -> None:
        self._locate = locate
        self.url: str | None = None
        self.gateway_id = gateway_id
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._events: asyncio.Task[None] | None = None
        self.handles: dict[str, PodHandle] = {}
        self.connected = asyncio.Event()
        self._answered = asyncio.Event()
        """The leader answered a request while the event stream was down: reconnect now, not
        after the back-off (a gateway started before a scheduler was elected would otherwise
        miss its pods' exit codes for up to 5 s)."""
        self._claiming = 0
        self._releases: set[asyncio.Task[None]] = set()

    def _spawn_release(self, name: str) -> None:
        async def release() -> None:
            with contextlib.suppress(BackendError):
                await self._request("DELETE", f"/v1/instances/{name}")

        task = asyncio.create_task(release(), name=f"release {name}")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers)
        self._events = asyncio.create_task(self._follow(), name="pod events")

    async def close(self) -> None:
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events
        if self._session is not None:
            await self._session.close()

    async def _base(self) -> str:
        if self.url is None:
            try:
                url = await self._locate()
            except Exception as exc:
                raise BackendError(f"cannot look up the scheduler: {exc}") from exc
            if not url:
                raise BackendError(
                    "no scheduler has been elected yet; is the ember-scheduler "
                    "Deployment running? (kubectl -n ember-system get pods)"
                )
            self.url = url.rstrip("/")
        return self.url

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        """One request to the leader; looked up again, and tried once more, when the address
        known does not answer as the leader."""
        for attempt in (1, 2):
            try:
                return await self._request_once(method, path, body)
            except _Moved as exc:
                self.url = None
                if attempt == 2:
                    raise BackendError(str(exc)) from exc
        raise AssertionError("unreachable")

    async def _request_once(self, method: str, path: str, body: Any) -> Any:
        assert self._session is not None
        base = await self._base()
        try:
            async with self._session.request(
                method, base + path, json=body, timeout=self._timeout
            ) as response:
                data = await response.read()
                if response.status >= 400:
                    try:
                        message = orjson.loads(data)["error"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        message = data.decode(errors="replace")[:500]
                    if response.status == 503 and "not the leader" in message:
                        raise _Moved(f"the scheduler at {base} is not the leader")
                    raise BackendError(f"the scheduler answered {response.status}: {message}")
                if not self.connected.is_set():
                    self._answered.set()
                return orjson.loads(data) if data else None
        except aiohttp.ClientConnectionError as exc:
            raise _Moved(f"cannot reach the scheduler at {base}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(f"the scheduler at {base} failed: {exc}") from exc

    def instance_spec(self, handle: InstanceHandle, version: Version) -> SpecializeSpec:
        return {}  # the pod (security context, NetworkPolicy, limits) is the wall

    async def start_instance(self, instance_id: str, version: Version | None = None) -> PodHandle:
        if version is None:
            raise BackendError(
                "on Kubernetes the scheduler keeps the generic pool; "
                "set the gateway's generic pool size to 0"
            )
        body = {
            "gateway": self.gateway_id,
            "function": version.function,
            "version": version.version,
            "memory_bytes": version.config.memory_bytes,
            "timeout_s": version.config.timeout_s,
        }
        self._claiming += 1
        try:
            answer = await self._request("POST", "/v1/instances", body)
        finally:
            self._claiming -= 1
        handle = PodHandle(host=answer["host"], port=int(answer["port"]), name=answer["name"])
        self.handles[handle.name] = handle
        return handle

    async def relabel_instance(self, handle: Any, version: Version) -> None:
        assert isinstance(handle, PodHandle)
        body = {
            "gateway": self.gateway_id,
            "function": version.function,
            "version": version.version,
        }
        await self._request("PATCH", f"/v1/instances/{handle.name}", body)

    async def stop_instance(self, handle: Any, *, grace_s: float) -> None:
        assert isinstance(handle, PodHandle)
        self.handles.pop(handle.name, None)
        try:
            await self._request("DELETE", f"/v1/instances/{handle.name}")
        except BackendError as exc:
            # The scheduler collects the pods of a gateway that no longer claims them.
            log.warning("cannot give a pod back", extra={"pod": handle.name, "error": str(exc)})
        if not handle.gone.done():
            handle.gone.set_result("stopped")

    def _lost(self, name: str, reason: str, exit_code: int | None = None) -> None:
        handle = self.handles.pop(name, None)
        if handle is not None and not handle.gone.done():
            log.warning("invoker pod gone", extra={"pod": name, "reason": reason})
            handle.exit_code = exit_code
            handle.gone.set_result(reason)

    async def _follow(self) -> None:
        """Read the event stream; reconnect with a back-off when it breaks."""
        assert self._session is not None
        failures = 0
        while True:
            try:
                path = f"{await self._base()}/v1/gateways/{self.gateway_id}/events"
                async with self._session.get(
                    path, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
                ) as response:
                    if response.status != 200:
                        raise BackendError(
                            f"event stream: {response.status} {(await response.text())[:200]}"
                        )
                    async for line in response.content:
                        if not line.strip():
                            continue
                        message = orjson.loads(line)
                        if "pods" in message:
                            failures = 0
                            self.connected.set()
                            known = set(message["pods"])
                            for name in [n for n in self.handles if n not in known]:
                                self._lost(name, "unknown to the scheduler")
                            if self._claiming == 0:
                                # Left by an earlier life of this gateway (same id): give back.
                                for name in known - set(self.handles):
                                    self._spawn_release(name)
                        elif "gone" in message:
                            code = message.get("exit_code")
                            self._lost(
                                message["gone"],
                                message.get("reason", ""),
                                code if isinstance(code, int) else None,
                            )
            except (aiohttp.ClientError, TimeoutError, BackendError, ValueError) as exc:
                self.url = None  # look the leader up again: it may have changed
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning(
                        "lost the scheduler's event stream; reconnecting",
                        extra={"error": str(exc), "failures": failures},
                    )
            self.connected.clear()
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(5.0, 0.1 * 2 ** min(failures, 6))):
                    await self._answered.wait()
