"""A small Kubernetes API server, enough for the Kubernetes backend, and a kubelet behind it.

Serves pods (list with label selectors, watch from a resourceVersion, create, get, patch,
delete), ConfigMaps and SelfSubjectAccessReviews over real HTTP, for the official client. It
keeps what kmock does not: resourceVersions and uids, 409 on a name taken or a stale
resourceVersion in a patch, 410 on a watch from a compacted resourceVersion, label selectors, and
RBAC: the rules of a Role, with `resourceNames` matching only requests for a named object, as
Kubernetes does (anything else is 403; every (resource, verb) asked for is recorded), and 401
to everything once the credentials are `revoked`. Its garbage collector deletes, a moment
later, every pod whose owner (by uid) is gone: when the owner is deleted, and when a pod is
created for an owner that no longer exists.

The kubelet runs each pod's container command as a real process, with the pod's environment
and its own loopback address as pod IP (127.0.0.N), so the invoker in a "pod" is the one the
image runs. Its emptyDir volumes are temporary directories, removed with the pod (TMPDIR for
/tmp; a variable naming a path in another volume is rewritten to name the directory). A pod
whose process exits goes Failed; a deleted pod's process is stopped by PID.

Here: the HTTP handlers, RBAC enforced per request, and the kubelet. The objects, their events
and the watch streams are `tests/k8s/objects.py`; selectors, merge patches, Status bodies and
the Role's rules `tests/k8s/apimachinery.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import psutil
from aiohttp import web

from tests.k8s.apimachinery import Obj, matches, merge_patch, now, status
from tests.k8s.objects import ObjectStore

_pod_ips = itertools.count(2)


def _next_pod_ip() -> str:
    """Loopback addresses are all ours on Linux: each pod gets its own for the whole test
    session, so a pod's port never collides with an earlier pod's."""
    n = next(_pod_ips) % (254 * 254)
    return f"127.0.{n // 254}.{n % 254 + 1}"


class FakeKubernetes(ObjectStore):
    def __init__(
        self, *, rules: list[Obj] | None = None, run_pods: bool = True, python: str = sys.executable
    ) -> None:
        super().__init__()
        self.rules = rules
        """The caller's Role rules; None allows everything."""
        self.used: set[tuple[str, str]] = set()
        self.run_pods = run_pods
        self.python = python
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self.on_request: Callable[[web.Request], None] | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.spawned: list[int] = []
        """Every pod process's PID, to check that none outlives the fake."""
        self.kubelet: dict[str, asyncio.Task[None]] = {}
        """The task running each pod (it ends when the pod's process has exited)."""
        self.revoked = False
        """The caller's credentials are gone (its ServiceAccount deleted): 401 to everything."""

    # -- serving --------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        base = "/api/v1/namespaces/{ns}/{resource:pods|configmaps}"
        app.router.add_get(base, self._list)
        app.router.add_post(base, self._create)
        app.router.add_get(base + "/{name}", self._get)
        app.router.add_patch(base + "/{name}", self._patch)
        app.router.add_delete(base + "/{name}", self._delete)
        app.router.add_post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self._access_review
        )
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop serving, and every pod's process (by PID), leaving no task or pipe behind."""
        self.run_pods = False
        for queue in list(self.watchers):
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
        for name in list(self.processes):
            await self._kill(name)
        # The kubelet tasks end once their process has exited and its pipe is read out.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def kubeconfig(self, path: str) -> str:
        """Write a kubeconfig for this server to `path`."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def allows(self, resource: str, verb: str, name: str | None = None) -> bool:
        if self.rules is None:
            return True
        for rule in self.rules:
            if resource in rule["resources"] and verb in rule["verbs"]:
                names = rule.get("resourceNames")
                if not names or (name is not None and name in names):
                    return True
        return False

    def _authorize(self, resource: str, verb: str, name: str | None = None) -> web.Response | None:
        if self.revoked:
            return status(401, "Unauthorized", "Unauthorized")
        self.used.add((resource, verb))
        if not self.allows(resource, verb, name):
            return status(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "fake" cannot {verb} resource "{resource}"',
            )
        return None

    # -- handlers -------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.StreamResponse:
        ns, resource = request.match_info["ns"], request.match_info["resource"]
        watching = request.query.get("watch") in ("true", "1")
        self.requests.append(("watch" if watching else "list", resource))
        denied = self._authorize(resource, "watch" if watching else "list")
        if denied:
            return denied
        selector = request.query.get("labelSelector", "")

        def selected(o: Obj) -> bool:
            return o["metadata"].get("namespace") == ns and matches(
                selector, o["metadata"].get("labels") or {}
            )

        if not watching:
            items = [o for (r, _, _), o in self.objects.items() if r == resource and selected(o)]
            return web.json_response(
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )
        return await self.watch(request, resource, selected)

    async def _create(self, request: web.Request) -> web.Response:
        ns, resource = request.match_info["ns"], request.match_info["resource"]
        self.requests.append(("create", resource))
        denied = self._authorize(resource, "create")
        if denied:
            return denied
        obj = await request.json()
        name = obj.get("metadata", {}).get("name")
        if not name:
            return status(422, "Invalid", "metadata.name: Required value")
        if (resource, ns, name) in self.objects:
            return status(409, "AlreadyExists", f'{resource} "{name}" already exists')
        if resource == "pods":
            obj["status"] = {"phase": "Pending", "conditions": []}
        self.put(resource, ns, obj)
        if resource == "pods" and self.run_pods:
            self.kubelet[name] = self._spawn(self._run_pod(ns, name))
        if resource == "pods" and obj["metadata"].get("ownerReferences"):
            self._spawn(self._collect_garbage())  # an owner already gone
        return web.json_response(obj, status=201)

    def _find(self, request: web.Request, verb: str) -> Obj | web.Response:
        ns, resource = request.match_info["ns"], request.match_info["resource"]
        name = request.match_info["name"]
        self.requests.append((verb, resource))
        denied = self._authorize(resource, verb, name)
        if denied:
            return denied
        obj = self.objects.get((resource, ns, name))
        if obj is None:
            return status(404, "NotFound", f'{resource} "{name}" not found')
        return obj

    async def _get(self, request: web.Request) -> web.Response:
        found = self._find(request, "get")
        return found if isinstance(found, web.Response) else web.json_response(found)

    async def _patch(self, request: web.Request) -> web.Response:
        found = self._find(request, "patch")
        if isinstance(found, web.Response):
            return found
        patch = await request.json()
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != found["metadata"]["resourceVersion"]:
            return status(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; "
                "please apply your changes to the latest version and try again",
            )
        patched = merge_patch(found, patch)
        found.clear()
        found.update(patched)
        self._record("MODIFIED", request.match_info["resource"], found)
        return web.json_response(found)

    async def _delete(self, request: web.Request) -> web.Response:
        found = self._find(request, "delete")
        if isinstance(found, web.Response):
            return found
        ns, resource = request.match_info["ns"], request.match_info["resource"]
        name = request.match_info["name"]
        if resource != "pods":
            self.delete_object(resource, ns, name)
            return web.json_response(found)
        if not found["metadata"].get("deletionTimestamp"):
            found["metadata"]["deletionTimestamp"] = now()
            self._record("MODIFIED", resource, found)
            self._spawn(self._finish_delete(ns, name))
        return web.json_response(found)

    async def _access_review(self, request: web.Request) -> web.Response:
        if self.revoked:
            return status(401, "Unauthorized", "Unauthorized")
        review = await request.json()
        attrs = review["spec"]["resourceAttributes"]
        allowed = self.allows(attrs["resource"], attrs["verb"], attrs.get("name"))
        review["status"] = {"allowed": allowed}
        return web.json_response(review, status=201)

    def delete_object(self, resource: str, namespace: str, name: str) -> None:
        """Delete an object that is not a pod (`kubectl delete`); the garbage collector then
        deletes the pods it owned."""
        obj = self.objects.pop((resource, namespace, name))
        self._record("DELETED", resource, obj)
        self._spawn(self._collect_garbage())

    async def _collect_garbage(self) -> None:
        """Kubernetes' garbage collector: a pod whose owner (by uid) no longer exists is
        deleted, in the background and a moment later, as the real one does."""
        await asyncio.sleep(0.02)
        uids = {o["metadata"].get("uid") for o in self.objects.values()}
        for (resource, ns, name), obj in list(self.objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if resource != "pods" or obj["metadata"].get("deletionTimestamp") or not owners:
                continue
            if all(ref.get("uid") not in uids for ref in owners):
                obj["metadata"]["deletionTimestamp"] = now()
                self._record("MODIFIED", resource, obj)
                self._spawn(self._finish_delete(ns, name))

    # -- the kubelet ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_pod(self, ns: str, name: str) -> None:
        obj = self.objects[("pods", ns, name)]
        container = obj["spec"]["containers"][0]
        ip = _next_pod_ip()
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if command and command[0] == "python":
            command[0] = self.python
        # The pod's /tmp (an emptyDir): removed with the pod.
        scratch = tempfile.mkdtemp(prefix=f"fake-pod-{name}-")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": scratch,
            "TMPDIR": scratch,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.getcwd(),
        }
        env.update({e["name"]: e["value"] for e in container.get("env", [])})
        env["EMBER_INVOKER_HOST"] = ip  # what 0.0.0.0 is inside the pod's own network
        # Its other emptyDir volumes: directories of their own, removed with the pod; a
        # variable that names a path in one names that directory.
        empty_dirs = {v["name"] for v in obj["spec"].get("volumes", []) if "emptyDir" in v}
        for mount in container.get("volumeMounts", []):
            path = mount["mountPath"]
            if mount["name"] in empty_dirs and path != "/tmp":
                local = tempfile.mkdtemp(prefix=f"{mount['name']}-", dir=scratch)
                for key, value in env.items():
                    if value == path or value.startswith(path + "/"):
                        env[key] = local + value[len(path) :]
        try:
            await self._run_process(ns, name, ip, command, env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _run_process(
        self, ns: str, name: str, ip: str, command: list[str], env: dict[str, str]
    ) -> None:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, start_new_session=True
        )
        self.processes[name] = process
        self.spawned.append(process.pid)
        if not self.run_pods:  # the fake stopped while this pod was starting
            await self._kill(name)
        assert process.stdout is not None
        first = await process.stdout.readline()
        if first.strip() and ("pods", ns, name) in self.objects:

            def running(o: Obj) -> None:
                o["status"] = {
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True"}],
                }

            self.modify(ns, name, running)
        await process.stdout.read()  # until the process is gone (EOF closes the pipe)
        code = await process.wait()
        self.processes.pop(name, None)
        current = self.objects.get(("pods", ns, name))
        if current is None or current["metadata"].get("deletionTimestamp"):
            return

        def failed(o: Obj) -> None:
            o["status"] = {
                "phase": "Failed",
                "podIP": ip,
                "reason": "Error",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "invoker",
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "OOMKilled" if code == -9 else "Error",
                            }
                        },
                    }
                ],
            }

        self.modify(ns, name, failed)

    async def _kill(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(2.0):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()

    async def _finish_delete(self, ns: str, name: str) -> None:
        await self._kill(name)
        obj = self.objects.pop(("pods", ns, name), None)
        if obj is not None:
            self._record("DELETED", "pods", obj)

    async def crash_pod(self, name: str) -> None:
        """The pod's process dies (as on an OOM kill): the pod goes Failed."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        await self.kubelet[name]


def assert_stopped(api: FakeKubernetes) -> None:
    """No pod process outlives the fake (zombies reaped by their parent's exit aside)."""
    alive = []
    for pid in api.spawned:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    assert not alive, f"pod processes left running: {alive}"
