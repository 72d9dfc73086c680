"""Gateway replicas on the Kubernetes backend share warm pods: a call that lands on a replica
that is not its function's home is sent to the home and runs in the home's pod, and when the
home stops, another replica takes the function over (gateway/routing.py)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import pytest

from gateway.routing import HOME_HEADER, Home, home_among
from scheduler.backends.kubernetes import FUNCTION_LABEL, GATEWAY_LABEL, STATE_LABEL
from tests.conftest import PlatformFactory, Running
from tests.k8s.fakeapi import FakeKubernetes
from tests.k8s.test_platform import (  # noqa: F401 - start_scheduler is a fixture
    SCHEDULER_TOKEN,
    SchedulerFactory,
    pods,
    start_scheduler,
)

pytestmark = pytest.mark.timeout(90)

HANDLER = (
    "import os\n"
    "INSTANCE = os.urandom(8).hex()\n"
    "def handler(event, context):\n"
    "    return {'instance': INSTANCE}\n"
)


def gateway(make_platform: PlatformFactory, name: str) -> AbstractAsyncContextManager[Running]:
    return make_platform(
        backend="kubernetes",
        scheduler_token=SCHEDULER_TOKEN,
        gateway_id=name,
        pool={"generic_pool_size": 0},
    )


async def call(g: Running, name: str) -> tuple[str, str | None]:
    response = await g.call(name, {})
    assert response.status == 200, await response.text()
    return (await response.json())["instance"], response.headers.get(HOME_HEADER)


async def test_replicas_share_the_homes_pod_and_take_over_when_it_stops(
    fake: FakeKubernetes,
    start_scheduler: SchedulerFactory,  # noqa: F811 - the fixture imported above
    make_platform: PlatformFactory,
) -> None:
    async with start_scheduler() as scheduler, gateway(make_platform, "gw-b") as b:
        await scheduler.wait_health("leader")
        async with gateway(make_platform, "gw-a") as a:
            for g in (a, b):
                await g.platform.router.advertise(g.url)
            for g in (a, b):
                await g.platform.router.refresh()
            homes: list[Home] = a.platform.router.homes
            assert [h.name for h in homes] == [h.name for h in b.platform.router.homes]
            [home_a] = [h for h in homes if h.name == "gw-a"]
            name = next(n for i in range(1000) if home_among(homes, n := f"f{i}") == home_a)
            await a.deploy_ok(name, HANDLER)  # its check leaves a warm pod at a

            served = {await call(g, name) for g in (b, a, b, b, a)}
            assert {instance for instance, _ in served} == {next(iter(served))[0]}
            assert {home for _, home in served} == {"gw-a", None}  # b sent, a served
            # One pod for the function in the cluster, held by its home; b holds none.
            [pod] = pods(fake, **{STATE_LABEL: "specialized", FUNCTION_LABEL: name})
            assert pod["metadata"]["labels"][GATEWAY_LABEL] == "gw-a"
            status, data = await a.admin("GET", f"/v1/functions/{name}/activations")
            assert status == 200
            assert [x["cold"] for x in data["activations"]] == [False] * 5
            before = next(iter(served))[0]
        # a stopped (withdrawing first, then giving its pods back): b takes the function over.
        await b.platform.router.refresh()
        assert [h.name for h in b.platform.router.homes] == ["gw-b"]
        instance, home = await call(b, name)
        assert (home, instance != before) == (None, True)
        [pod] = pods(fake, **{STATE_LABEL: "specialized", FUNCTION_LABEL: name})
        assert pod["metadata"]["labels"][GATEWAY_LABEL] == "gw-b"


async def no_pods_left(fake: FakeKubernetes, **labels: str) -> None:
    """Until no live pod has these labels (the scheduler deletes a pod given back)."""
    async with asyncio.timeout(20):
        while pods(fake, **labels):  # noqa: ASYNC110 - the API server is polled, as kubectl does
            await asyncio.sleep(0.05)


async def test_only_the_home_keeps_pods_a_check_elsewhere_and_a_moved_function_give_them_back(
    fake: FakeKubernetes,
    start_scheduler: SchedulerFactory,  # noqa: F811 - the fixture imported above
    make_platform: PlatformFactory,
) -> None:
    async with (
        start_scheduler() as scheduler,
        gateway(make_platform, "gw-a") as a,
        gateway(make_platform, "gw-b") as b,
    ):
        await scheduler.wait_health("leader")
        for g in (a, b):
            await g.platform.router.advertise(g.url)
        for g in (a, b):
            await g.platform.router.refresh()
        homes: list[Home] = a.platform.router.homes
        [home_a] = [h for h in homes if h.name == "gw-a"]
        async with gateway(make_platform, "gw-c") as c:
            joining = Home(id=c.platform.router.run_id, name="gw-c", address="")
            name = next(
                n
                for i in range(10_000)
                if home_among(homes, n := f"f{i}") == home_a
                and home_among([*homes, joining], n) == joining
            )
            # Deployed through b, not its home: b's check pod is given back at once.
            await b.deploy_ok(name, HANDLER)
            function = {STATE_LABEL: "specialized", FUNCTION_LABEL: name}
            await no_pods_left(fake, **function, **{GATEWAY_LABEL: "gw-b"})
            served = {await call(g, name) for g in (b, a)}
            assert {home for _, home in served} == {"gw-a", None}
            [pod] = pods(fake, **function)
            assert pod["metadata"]["labels"][GATEWAY_LABEL] == "gw-a"

            # c joins and is the function's home now: a gives its idle pod back when it reads
            # the list, not after the keep-alive (10 minutes).
            await c.platform.router.advertise(c.url)
            for g in (a, b, c):
                await g.platform.router.refresh()
            assert a.platform.scheduler.instances_of(name) == []
            await no_pods_left(fake, **function, **{GATEWAY_LABEL: "gw-a"})
            moved = {await call(g, name) for g in (a, b)}
            assert {home for _, home in moved} == {"gw-c"}
            assert {instance for instance, _ in moved} - {i for i, _ in served} == {
                next(iter(moved))[0]
            }  # one new pod, c's
            [pod] = pods(fake, **function)
            assert pod["metadata"]["labels"][GATEWAY_LABEL] == "gw-c"
