"""The platform on the Kubernetes backend, end to end: a gateway, the scheduler process
(`python -m scheduler`, the image's entry point) and invoker pods, against tests/k8s/fakeapi."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scheduler.backends.kubernetes import (
    FUNCTION_LABEL,
    GATEWAY_LABEL,
    STATE_LABEL,
    VERSION_LABEL,
)
from scheduler.backends.remote import RemoteBackend
from tests.conftest import PlatformFactory
from tests.k8s.apimachinery import SCHEDULER_RULES, without
from tests.k8s.conftest import NS
from tests.k8s.fakeapi import FakeKubernetes

SCHEDULER_TOKEN = "scheduler-test-token"
HANDLER = "import os\ndef handler(event, context):\n    return {'pid': os.getpid()}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SchedulerProcess:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    async def health(self) -> str:
        """ "leader" or "standby" when the readiness probe passes, else "down"."""
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as response:
                if response.status != 200:
                    return "down"
                return "leader" if (await response.json())["leader"] else "standby"
        except aiohttp.ClientError:
            return "down"

    async def wait_health(self, state: str, timeout_s: float = 30.0) -> None:
        """Poll the readiness probe, as the kubelet does, until it says `state`."""
        async with asyncio.timeout(timeout_s):
            while await self.health() != state:  # noqa: ASYNC110 - a probe is a poll
                await asyncio.sleep(0.05)


SchedulerFactory = Callable[..., AbstractAsyncContextManager[SchedulerProcess]]


@pytest.fixture
def start_scheduler(fake: FakeKubernetes, database_url: str, tmp_path: Path) -> SchedulerFactory:
    @asynccontextmanager
    async def start(**env: str) -> AsyncIterator[SchedulerProcess]:
        port = free_port()
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "DATABASE_URL": database_url,
            "FN_SCHEDULER_TOKEN": SCHEDULER_TOKEN,
            "EMBER_SCHEDULER_PORT": str(port),
            "KUBECONFIG": fake.kubeconfig(str(tmp_path / "kubeconfig")),
            "EMBER_NAMESPACE": NS,
            "EMBER_GENERIC_POOL": "1",
            "PYTHONPATH": os.getcwd(),
            **env,
        }
        with open(tmp_path / f"scheduler-{port}.log", "wb") as log:  # noqa: ASYNC230
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "scheduler", env=environment, stderr=log
            )
        try:
            yield SchedulerProcess(process, f"http://127.0.0.1:{port}")
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(10):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()

    return start


def pods(fake: FakeKubernetes, **labels: str) -> list[dict[str, Any]]:
    return [
        p
        for p in fake.pods(NS)
        if not p["metadata"].get("deletionTimestamp")
        and all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())
    ]


async def test_calls_run_in_invoker_pods(
    fake: FakeKubernetes, start_scheduler: SchedulerFactory, make_platform: PlatformFactory
) -> None:
    async with start_scheduler() as scheduler:
        await scheduler.wait_health("leader")
        # No scheduler URL: the gateway finds the leader where it wrote its address.
        async with make_platform(
            backend="kubernetes",
            scheduler_token=SCHEDULER_TOKEN,
            gateway_id="gw-a",
            pool={"generic_pool_size": 0},
        ) as r:
            backend = r.platform.scheduler.backend
            assert isinstance(backend, RemoteBackend)
            await asyncio.wait_for(backend.connected.wait(), 10)
            assert backend.url == scheduler.url
            await r.deploy_ok("hello", HANDLER)
            response = await r.call("hello", {})
            assert response.status == 200, await response.text()
            pid = (await response.json())["pid"]
            # It ran in the process of a pod the scheduler labelled for this function and
            # gateway: the generic pod, specialized.
            [pod] = pods(fake, **{STATE_LABEL: "specialized", FUNCTION_LABEL: "hello"})
            assert pod["metadata"]["labels"][GATEWAY_LABEL] == "gw-a"
            assert fake.processes[pod["metadata"]["name"]].pid == pid
            assert (await (await r.call("hello", {})).json())["pid"] == pid  # warm

            # The pod dies: the gateway hears it, and the next call gets a new pod.
            await fake.crash_pod(pod["metadata"]["name"])
            await r.platform.scheduler.wait_until(
                lambda: not r.platform.scheduler.instances_of("hello"), 10
            )
            response = await r.call("hello", {})
            assert response.status == 200, await response.text()
            assert (await response.json())["pid"] != pid

            # Deleting the function gives its pods back.
            status, _ = await r.admin("DELETE", "/v1/functions/hello")
            assert status == 200
            await r.platform.scheduler.wait_until(
                lambda: not r.platform.scheduler.instances_of("hello"), 10
            )
        # The gateway stopped: none of its pods is left.
        assert pods(fake, **{GATEWAY_LABEL: "gw-a"}) == []


async def test_one_leader_and_a_standby_that_takes_over(
    fake: FakeKubernetes, start_scheduler: SchedulerFactory, make_platform: PlatformFactory
) -> None:
    async with (
        start_scheduler() as first,
        make_platform(
            backend="kubernetes",
            scheduler_token=SCHEDULER_TOKEN,
            gateway_id="gw-b",
            pool={"generic_pool_size": 0},
        ) as r,
    ):
        await first.wait_health("leader")
        await r.deploy_ok("one", HANDLER)
        assert (await r.call("one", {})).status == 200
        async with start_scheduler() as second:
            await second.wait_health("standby")  # ready (a rollout can go on), not leading
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{second.url}/v1/instances",
                    json={},
                    headers={"Authorization": f"Bearer {SCHEDULER_TOKEN}"},
                ) as response,
            ):
                assert response.status == 503
            generic = {p["metadata"]["name"] for p in pods(fake, **{STATE_LABEL: "generic"})}
            first.process.send_signal(signal.SIGTERM)
            assert await first.process.wait() == 0
            await second.wait_health("leader")
            # The new leader adopted the pods instead of starting others, and the gateway,
            # which looks the leader up again, gets its next pod from it.
            created = sum(1 for x in fake.requests if x == ("create", "pods"))
            assert {
                p["metadata"]["name"] for p in pods(fake, **{STATE_LABEL: "generic"})
            } == generic
            assert (await r.call("one", {})).status == 200  # warm: the pod outlived the leader
            await r.deploy_ok("two", HANDLER)
            assert (await r.call("two", {})).status == 200
            backend = r.platform.scheduler.backend
            assert isinstance(backend, RemoteBackend)
            assert backend.url == second.url

            # One new pod: the refill of the generic pod "two" took (off the request path, so
            # awaited: on a loaded machine it may still be on its way).
            def creates() -> int:
                return sum(1 for x in fake.requests if x == ("create", "pods"))

            await fake.wait_until(lambda: creates() >= created + 1, 20)
            assert creates() == created + 1


async def test_the_scheduler_names_a_missing_permission(
    fake: FakeKubernetes, start_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    fake.rules = without(SCHEDULER_RULES, "pods", "patch")
    async with start_scheduler() as scheduler:
        code = await asyncio.wait_for(scheduler.process.wait(), 30)
    assert code == 2
    log = next(tmp_path.glob("scheduler-*.log")).read_text()  # noqa: ASYNC240
    assert 'may not patch pods in namespace \\"ember-functions\\"' in log


async def test_the_scheduler_api_needs_its_token(
    fake: FakeKubernetes, start_scheduler: SchedulerFactory
) -> None:
    async with start_scheduler() as scheduler:
        await scheduler.wait_health("leader")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{scheduler.url}/v1/instances", json={}) as response,
        ):
            assert response.status == 401


async def test_pods_of_a_gateway_that_is_gone_are_collected(
    fake: FakeKubernetes, start_scheduler: SchedulerFactory
) -> None:
    async with start_scheduler(EMBER_ORPHAN_GRACE="1") as scheduler:
        await scheduler.wait_health("leader")
        headers = {"Authorization": f"Bearer {SCHEDULER_TOKEN}"}
        body = {
            "gateway": "gw-dead",
            "function": "f",
            "version": 1,
            "memory_bytes": 1 << 20,
            "timeout_s": 5,
        }
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(f"{scheduler.url}/v1/instances", json=body) as response,
        ):
            assert response.status == 201
            name = (await response.json())["name"]
        # That gateway never connects its event stream: after the grace period the pod goes.
        await fake.wait_until(lambda: ("pods", NS, name) not in fake.objects)


EXIT_3 = "import os\ndef handler(event, context):\n    os._exit(3)\n"


async def test_a_pod_is_labelled_with_the_deployed_version_and_its_exit_code_reaches_the_call(
    fake: FakeKubernetes, start_scheduler: SchedulerFactory, make_platform: PlatformFactory
) -> None:
    async with (
        start_scheduler() as scheduler,
        make_platform(
            backend="kubernetes",
            scheduler_token=SCHEDULER_TOKEN,
            gateway_id="gw-v",
            pool={"generic_pool_size": 0},
        ) as r,
    ):
        await scheduler.wait_health("leader")
        await r.deploy_ok("hello", HANDLER)
        await r.deploy_ok("hello", HANDLER)  # version 2
        # The deploy's import check claimed the pod as version 0; admitted, it says 2.
        held = pods(fake, **{STATE_LABEL: "specialized", FUNCTION_LABEL: "hello"})
        assert sorted(p["metadata"]["labels"][VERSION_LABEL] for p in held) == ["1", "2"]
        await r.deploy_ok("exits", EXIT_3)
        response = await r.call("exits", {})
        assert response.status == 502
        message = (await response.json())["error"]["message"]
        assert "exit code 3" in message, message


async def test_the_scheduler_exits_when_its_permissions_are_gone(
    fake: FakeKubernetes, start_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    async with start_scheduler(EMBER_ACCESS_CHECK="1") as scheduler:
        await scheduler.wait_health("leader")
        fake.rules = []  # the RoleBinding deleted
        code = await asyncio.wait_for(scheduler.process.wait(), 30)
    assert code == 2
    log = next(tmp_path.glob("scheduler-*.log")).read_text()  # noqa: ASYNC240
    assert "lost its permissions" in log
