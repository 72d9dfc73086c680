"""The fake API's objects: resourceVersions and uids, the history of events, and the watch
streams that replay it (410 Gone from before a compaction, as after etcd's)."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Callable

from aiohttp import web

from tests.k8s.apimachinery import Obj, now


class ObjectStore:
    """Objects by (resource, namespace, name), each change an event for the watches."""

    def __init__(self) -> None:
        self.rv = 100
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (resource, namespace, name)
        self.history: list[tuple[int, str, Obj]] = []
        self.compacted = 0
        self.watchers: set[asyncio.Queue[tuple[int, str, Obj] | None]] = set()
        self._waiters: set[asyncio.Event] = set()

    def _record(self, kind: str, resource: str, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        event = (self.rv, kind, copy.deepcopy(obj) | {"_resource": resource})
        self.history.append(event)
        for queue in list(self.watchers):
            queue.put_nowait(event)
        for waiter in self._waiters:
            waiter.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Wait until `predicate()` holds; checked after every change of any object."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    await event.wait()
                    event.clear()
        finally:
            self._waiters.discard(event)

    def put(self, resource: str, namespace: str, obj: Obj) -> Obj:
        """Create an object directly (test set-up, or "someone else" creating it)."""
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
        self.objects[(resource, namespace, meta["name"])] = obj
        self._record("ADDED", resource, obj)
        return obj

    def pods(self, namespace: str | None = None) -> list[Obj]:
        return [
            o for (r, ns, _), o in self.objects.items() if r == "pods" and namespace in (None, ns)
        ]

    def modify(
        self, namespace: str, name: str, change: Callable[[Obj], None], resource: str = "pods"
    ) -> Obj:
        obj = self.objects[(resource, namespace, name)]
        change(obj)
        self._record("MODIFIED", resource, obj)
        return obj

    def expire_watches(self) -> None:
        """Compact the history: every open watch ends, and watching again from an older
        resourceVersion gets 410 Gone, as after etcd compaction."""
        self.compacted = self.rv
        self.history.clear()
        for queue in list(self.watchers):
            queue.put_nowait(None)

    async def watch(
        self, request: web.Request, resource: str, selected: Callable[[Obj], bool]
    ) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        if since < self.compacted:
            gone = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {since}",
                },
            }
            await response.write(json.dumps(gone).encode() + b"\n")
            return response
        queue: asyncio.Queue[tuple[int, str, Obj] | None] = asyncio.Queue()
        for event in self.history:
            if event[0] > since:
                queue.put_nowait(event)
        self.watchers.add(queue)
        timeout_s = float(request.query.get("timeoutSeconds") or 300)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    _, kind, tagged = item
                    obj = {k: v for k, v in tagged.items() if k != "_resource"}
                    if tagged["_resource"] != resource or not selected(obj):
                        continue
                    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.watchers.discard(queue)
        return response
