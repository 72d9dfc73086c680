"""`PodPool`: the invoker pods of the functions namespace as the scheduler's leader keeps them:
the list and the watch that keep `pods` current, the generic pool and its refill, claims, and
waits on pod state (the package's docstring tells how they fit together)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from scheduler.backends.kubernetes.api import (
    KubernetesError,
    call,
    check_access,
    load_client,
)
from scheduler.backends.kubernetes.guards import Guard
from scheduler.backends.kubernetes.pods import (
    APP,
    APP_LABEL,
    FUNCTION_LABEL,
    GATEWAY_LABEL,
    STATE_LABEL,
    VERSION_LABEL,
    KubernetesSettings,
    PodView,
    label_value,
    pod_manifest,
)
from scheduler.tasks import Supervisor

log = logging.getLogger("ember.scheduler.kubernetes")

GoneCallback = Callable[[PodView, str], None]


class PodPool:
    def __init__(self, api: k8s.ApiClient, settings: KubernetesSettings) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.settings = settings
        self.pods: dict[str, PodView] = {}
        self.on_gone: list[GoneCallback] = []
        self.created_total = 0
        self.relists_total = 0
        self.gone_total = 0
        self.claims_total = {"generic": 0, "created": 0}
        """Claims served by relabelling a ready generic pod, and by creating a pod (a pod
        start: the generic pool was empty, or the function too big for a generic pod)."""
        self._creating: set[str] = set()
        self._created_at: dict[str, float] = {}
        self._resource_version = ""
        self._waiters: set[asyncio.Event] = set()
        self._refill = asyncio.Event()
        self._tasks = Supervisor(log)
        self._watch_response: Any = None
        self._stopping = False
        self._guard = Guard(api, settings)

    # -- connecting ---------------------------------------------------------------------------

    @classmethod
    def load_client(cls, kubeconfig: str | None = None) -> k8s.ApiClient:
        """A client for the cluster: from `kubeconfig` when given, else in-cluster."""
        return load_client(kubeconfig)

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await call(self.api, what, fn, *args, **kwargs)
        except KubernetesError as exc:
            if exc.denied:
                self._guard.denied.set()
            raise

    async def check_access(self) -> None:
        """Fail early, and say which permission is missing, rather than on the first call."""
        await check_access(self.api, self.settings)

    async def _load_owner(self) -> None:
        await self._guard.load_owner()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.check_access()
        await self._load_owner()
        await self._relist()
        adopted = [p for p in self.pods.values() if not p.dead]
        log.info(
            "adopted invoker pods",
            extra={
                "generic": sum(p.state == "generic" for p in adopted),
                "specialized": sum(p.state == "specialized" for p in adopted),
            },
        )
        self._tasks.spawn(self._watcher(), "pod watch", critical=True)
        self._tasks.spawn(self._refiller(), "pod pool refill", critical=True)
        self._tasks.spawn(self._guard.check_access_often(), "permission check", critical=True)
        self._refill.set()

    @property
    def failed(self) -> BaseException | None:
        """Why the watch or the refill died, if one did."""
        return self._tasks.failed

    @property
    def broken(self) -> asyncio.Event:
        """Set when the watch or the refill died: the scheduler process should stop."""
        return self._tasks.broken

    async def close(self) -> None:
        self._stopping = True
        self._tasks.closing = True  # the watch ends on its own now: that is no failure
        response = self._watch_response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown() if hasattr(response, "shutdown") else response.close()
        await self._tasks.close()
        await asyncio.to_thread(self.api.close)

    # -- pod state ----------------------------------------------------------------------------

    def _selector(self) -> str:
        return f"{APP_LABEL}={APP}"

    async def _relist(self) -> None:
        began = time.monotonic()
        listing = await self._call(
            "listing invoker pods",
            self.core.list_namespaced_pod,
            self.settings.namespace,
            label_selector=self._selector(),
        )
        fresh = {o["metadata"]["name"]: PodView.from_object(o) for o in listing.get("items", [])}
        for name, old in list(self.pods.items()):
            # A pod we created while the list was on its way is not in it; the watch that
            # follows (from the list's resourceVersion) tells its fate.
            if (
                name not in fresh
                and name not in self._creating
                and self._created_at.get(name, 0.0) < began
            ):
                self._forget(old, "deleted")
        for pod in fresh.values():
            self._update(pod)
        self._resource_version = listing.get("metadata", {}).get("resourceVersion", "")
        self.relists_total += 1

    def _update(self, pod: PodView) -> None:
        old = self.pods.get(pod.name)
        self.pods[pod.name] = pod
        if pod.dead and (old is None or not old.dead):
            self._report(pod, pod.reason or ("deleted" if pod.deleting else pod.phase))
        if pod.dead or old is None or old.state != pod.state:
            self._refill.set()  # the generic pool may be short, or a failed pod to remove
        self._wake()

    def _forget(self, pod: PodView, reason: str) -> None:
        self._created_at.pop(pod.name, None)
        if not self._stopping:
            self._guard.gone(pod.name)
        old = self.pods.pop(pod.name, None)
        if old is not None and not old.dead:
            self._report(pod, reason)
        if pod.state == "generic":
            self._refill.set()
        self._wake()

    def _report(self, pod: PodView, reason: str) -> None:
        self.gone_total += 1
        if pod.state != "specialized":
            if pod.state == "generic" and pod.phase == "Failed":
                log.warning("generic invoker pod failed", extra={"pod": pod.name, "reason": reason})
            return
        for callback in self.on_gone:
            callback(pod, reason)

    def _watch_thread(
        self, resource_version: str, queue: asyncio.Queue[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Read one watch response line by line and pass the events to the loop."""
        try:
            response: Any = self.core.list_namespaced_pod(
                self.settings.namespace,
                label_selector=self._selector(),
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=300,
                _preload_content=False,
                _request_timeout=(10, 330),
            )
            self._watch_response = response
            buffer = b""
            for chunk in response.stream(65536, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            self._watch_response = None

    async def _watcher(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            queue: asyncio.Queue[Any] = asyncio.Queue()
            thread = threading.Thread(
                target=self._watch_thread,
                name="pod watch",
                args=(self._resource_version, queue, loop),
                daemon=True,
            )
            thread.start()
            expired = False
            while True:
                item = await queue.get()
                if item is None:
                    failures = 0
                    break
                if isinstance(item, BaseException):
                    if self._stopping:
                        return
                    if isinstance(item, ApiException) and item.status == 410:
                        expired = True
                    else:
                        if isinstance(item, ApiException) and item.status in (401, 403):
                            self._guard.denied.set()
                        failures += 1
                        log.warning(
                            "pod watch failed; watching again",
                            extra={"error": str(item), "failures": failures},
                        )
                        await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                        expired = failures > 3
                    break
                kind, obj = item.get("type"), item.get("object") or {}
                if kind == "ERROR":
                    expired = obj.get("code") == 410
                    if not expired:
                        log.warning("pod watch error", extra={"error": obj.get("message")})
                    break
                rv = obj.get("metadata", {}).get("resourceVersion")
                if rv:
                    self._resource_version = rv
                if kind == "BOOKMARK":
                    continue
                pod = PodView.from_object(obj)
                if kind == "DELETED":
                    self._forget(pod, pod.reason or "deleted")
                else:
                    self._update(pod)
            if expired and not self._stopping:
                log.info("pod watch expired (410 Gone); listing again")
                try:
                    await self._relist()
                    failures = 0
                except KubernetesError as exc:
                    log.warning("cannot list invoker pods", extra={"error": str(exc)})
                    await asyncio.sleep(1.0)

    # -- the generic pool ---------------------------------------------------------------------

    def _outdated(self, pod: PodView) -> bool:
        return (
            pod.image != self.settings.image
            or pod.memory_bytes != self.settings.generic_memory_bytes
        )

    def generic(self, *, ready_only: bool = False) -> list[PodView]:
        return [
            p
            for p in self.pods.values()
            if p.state == "generic"
            and not p.dead
            and not self._outdated(p)
            and (p.usable() or not ready_only)
        ]

    async def _refiller(self) -> None:
        while not self._stopping:
            await self._refill.wait()
            self._refill.clear()
            for pod in [
                p
                for p in self.pods.values()
                if (p.dead and not p.deleting)
                or (p.state == "generic" and not p.dead and self._outdated(p))
            ]:
                # A failed pod (its reason was logged and reported), or a generic pod of an
                # earlier image or size (after an upgrade): remove it; the pool refills.
                try:
                    await self._delete(pod.name)
                except KubernetesError as exc:
                    log.warning(
                        "cannot delete an invoker pod", extra={"pod": pod.name, "error": str(exc)}
                    )
            missing = self.settings.generic_pool_size - len(self.generic())
            if missing > 0 and not await self._guard.may_create():
                self._refill.set()
                continue
            for _ in range(missing):
                try:
                    await self.create_pod(self.pod_spec())
                except KubernetesError as exc:
                    log.error("cannot create a generic invoker pod", extra={"error": str(exc)})
                    await asyncio.sleep(2.0)
                    self._refill.set()
                    break

    def pod_spec(
        self,
        *,
        function: str | None = None,
        version: int | None = None,
        gateway: str | None = None,
        memory_bytes: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """The pod of an invoker: generic, or for one function version when `function` is set."""
        return pod_manifest(
            self.settings,
            self._guard.owner,
            function=function,
            version=version,
            gateway=gateway,
            memory_bytes=memory_bytes,
            timeout_s=timeout_s,
        )

    async def create_pod(self, spec: dict[str, Any]) -> PodView:
        name = spec["metadata"]["name"]
        self._creating.add(name)
        try:
            obj = await self._call(
                f'creating pod "{name}"',
                self.core.create_namespaced_pod,
                self.settings.namespace,
                spec,
            )
        finally:
            self._creating.discard(name)
        self.created_total += 1
        self._created_at[name] = time.monotonic()
        pod = PodView.from_object(obj)
        if pod.name not in self.pods:
            self.pods[pod.name] = pod
        return pod

    async def _delete(self, name: str) -> None:
        self._guard.deleting(name)
        try:
            await self._call(
                f'deleting pod "{name}"',
                self.core.delete_namespaced_pod,
                name,
                self.settings.namespace,
                grace_period_seconds=self.settings.stop_grace_s,
            )
        except KubernetesError as exc:
            if exc.status != 404:
                raise

    # -- what the scheduler asks ----------------------------------------------------------------

    async def claim(
        self, *, gateway: str, function: str, version: int, memory_bytes: int, timeout_s: float
    ) -> PodView:
        """A ready pod for a function version, owned by `gateway`: a generic one relabelled,
        else a new one (which takes a pod start)."""
        labels = {
            STATE_LABEL: "specialized",
            FUNCTION_LABEL: label_value(function),
            VERSION_LABEL: str(version),
            GATEWAY_LABEL: label_value(gateway),
        }
        if memory_bytes <= self.settings.generic_memory_bytes:
            for pod in sorted(self.generic(ready_only=True), key=lambda p: p.name):
                patch = {"metadata": {"resourceVersion": pod.resource_version, "labels": labels}}
                try:
                    obj = await self._call(
                        f'claiming pod "{pod.name}"',
                        self.core.patch_namespaced_pod,
                        pod.name,
                        self.settings.namespace,
                        patch,
                    )
                except KubernetesError as exc:
                    if exc.status in (404, 409):
                        continue  # changed or gone meanwhile: try the next one
                    raise
                claimed = PodView.from_object(obj)
                self.pods[claimed.name] = claimed
                self._refill.set()
                if claimed.usable():
                    self.claims_total["generic"] += 1
                    return claimed
                with contextlib.suppress(KubernetesError):  # died meanwhile: nobody else
                    await self._delete(claimed.name)  # would delete it
        if self._guard.owner_stale and not await self._guard.reload_owner():
            raise KubernetesError(
                f'cannot create an invoker pod: the ConfigMap "{self.settings.owner_configmap}" '
                f'that owns them is gone from namespace "{self.settings.namespace}"; '
                "apply deploy/ again"
            )
        pod = await self.create_pod(
            self.pod_spec(
                function=function,
                version=version,
                gateway=gateway,
                memory_bytes=memory_bytes,
                timeout_s=timeout_s,
            )
        )
        self._refill.set()
        self.claims_total["created"] += 1
        return await self.wait_ready(pod.name)

    def _wake(self) -> None:
        for event in self._waiters:
            event.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `predicate()` holds; it is checked after every change of pod state."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    await event.wait()
                    event.clear()
        finally:
            self._waiters.discard(event)

    async def wait_ready(self, name: str) -> PodView:
        def settled() -> bool:
            pod = self.pods.get(name)
            return pod is None or pod.dead or pod.usable()

        try:
            await self.wait_until(settled, self.settings.pod_start_timeout_s)
        except TimeoutError:
            await self._delete(name)
            phase = self.pods[name].phase if name in self.pods else "gone"
            raise KubernetesError(
                f'invoker pod "{name}" was not ready after '
                f"{self.settings.pod_start_timeout_s:g}s (phase {phase}); "
                f"kubectl describe pod {name} tells why"
            ) from None
        pod = self.pods.get(name)
        if pod is None or pod.dead:
            reason = pod.reason if pod is not None else "deleted"
            with contextlib.suppress(KubernetesError):
                await self._delete(name)
            raise KubernetesError(f'invoker pod "{name}" did not start: {reason}')
        return pod

    async def relabel(self, name: str, *, gateway: str, function: str, version: int) -> None:
        """Say which version a pod serves (it was claimed for a deploy's check, as version 0)."""
        pod = self.pods.get(name)
        if pod is None or pod.labels.get(GATEWAY_LABEL) != label_value(gateway):
            raise KubernetesError(f'pod "{name}" is not held by gateway "{gateway}"', 404)
        labels = {FUNCTION_LABEL: label_value(function), VERSION_LABEL: str(version)}
        obj = await self._call(
            f'relabelling pod "{name}"',
            self.core.patch_namespaced_pod,
            name,
            self.settings.namespace,
            {"metadata": {"labels": labels}},
        )
        self._update(PodView.from_object(obj))

    async def release(self, name: str) -> None:
        """Delete a pod the scheduler no longer needs (scale down, scale to zero)."""
        await self._delete(name)

    def owned_by(self, gateway: str) -> list[PodView]:
        value = label_value(gateway)
        return [
            p for p in self.pods.values() if p.labels.get(GATEWAY_LABEL) == value and not p.dead
        ]

    def address(self, pod: PodView) -> tuple[str, int]:
        assert pod.ip is not None
        return pod.ip, self.settings.port
