"""Gateways sharing one Postgres send each function's calls to its home gateway: the home's
warm instances serve them all, a dead home is routed around, and a joining or leaving gateway
moves only the functions it gains or loses (gateway/routing.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from gateway.routing import (
    HOME_HEADER,
    HOP_HEADER,
    HOP_PROOF_HEADER,
    Home,
    home_among,
    hop_proof,
)
from scheduler.backends.isolation import IsolationSettings
from tests.conftest import ROOT, TOKEN, PlatformFactory, Running, shared

pytestmark = pytest.mark.timeout(90)

# Platforms in one process would share their instances' cgroup directory (named after the
# pid): the walls are not what these tests are about.
NO_WALLS = IsolationSettings(mode="off")

HANDLER = (  # INSTANCE: which instance served (seen repeat: each has a PID namespace)
    "import os, time\n"
    "INSTANCE = os.urandom(8).hex()\n"
    "def handler(event, context):\n"
    "    if event.get('hold'):\n"
    "        open(event['hold'], 'w').close()\n"
    "        time.sleep(20)\n"
    "    headers = {k.lower(): v for k, v in context.headers.items()}\n"
    "    return {'instance': INSTANCE, 'hop': headers.get('x-ember-hop'),\n"
    "            'forwarded': headers.get('x-forwarded-for'),\n"
    "            'proof': headers.get('x-ember-hop-proof')}\n"
)


async def homes_ready(*gateways: Running) -> list[Home]:
    """Advertise every gateway and refresh each one's view until they all agree."""
    for g in gateways:
        await g.platform.router.advertise(g.url)
    for g in gateways:
        await g.platform.router.refresh()
    views = {tuple(h.id for h in g.platform.router.homes) for g in gateways}
    assert len(views) == 1, views
    homes = gateways[0].platform.router.homes
    assert len(homes) == len(gateways)
    return homes


def named_home_of(homes: list[Home], run: uuid.UUID, prefix: str = "f") -> str:
    """A function name whose home among `homes` is the run `run`."""
    for i in range(10_000):
        name = f"{prefix}{i}"
        home = home_among(homes, name)
        assert home is not None
        if home.id == run:
            return name
    raise AssertionError("no such name")


def run_of(g: Running) -> uuid.UUID:
    run = g.platform.events.run
    assert run is not None
    return run.id


async def call(g: Running, name: str, **event: Any) -> tuple[int, dict[str, Any], str | None]:
    response = await g.call(name, event)
    body = await response.json()
    return response.status, body, response.headers.get(HOME_HEADER)


async def cold_flags(home: Running, name: str) -> list[bool]:
    status, data = await home.admin("GET", f"/v1/functions/{name}/activations?limit=100")
    assert status == 200, data
    return [a["cold"] for a in data["activations"]]


@pytest.fixture
async def two(make_platform: PlatformFactory) -> AsyncIterator[tuple[Running, Running]]:
    async with (
        make_platform(gateway_id="gw-a", isolation=NO_WALLS) as a,
        make_platform(gateway_id="gw-b", isolation=NO_WALLS) as b,
    ):
        yield a, b


async def test_a_call_on_another_gateway_is_served_by_the_homes_warm_instance(
    two: tuple[Running, Running],
) -> None:
    a, b = two
    homes = await homes_ready(a, b)
    name = named_home_of(homes, run_of(b))
    await a.deploy_ok(name, HANDLER)  # deployed through the gateway that is not its home

    seen: set[str] = set()
    for g in (a, b, a, b, a, a):
        status, body, served_by = await call(g, name)
        assert status == 200, body
        seen.add(body["instance"])
        assert served_by == ("gw-b" if g is a else None)  # b serves itself: no hop
        # The handler at the home sees who sent it, and the caller's address.
        assert (body["hop"], body["forwarded"]) == (
            ("gw-a", "127.0.0.1") if g is a else (None, None)
        )
        assert body["proof"] is None  # the peers' proof is not the handler's to see
    # One instance, at the home, served all six: one cold start, not one per gateway.
    assert len(b.platform.scheduler.instances_of(name)) == 1
    assert len(seen) == 1
    assert await cold_flags(b, name) == [False] * 5 + [True]  # newest first

    # A call a peer sent is served where it arrives, whatever that gateway's view: one hop.
    # A client's X-Ember-Hop (no proof, or a wrong one) is no peer's: the home serves it, so
    # a caller cannot start instances on every gateway (N times max_instances) with it.
    for forged in ({HOP_HEADER: "gw-b"}, {HOP_HEADER: "gw-b", HOP_PROOF_HEADER: "0" * 64}):
        response = await a.call(name, {}, headers=forged)
        assert response.status == 200
        assert response.headers[HOME_HEADER] == "gw-b"
        assert (await response.json())["instance"] in seen
    assert a.platform.scheduler.instances_of(name) == []
    response = await a.call(
        name, {}, headers={HOP_HEADER: "gw-b", HOP_PROOF_HEADER: hop_proof(TOKEN)}
    )
    assert response.status == 200
    assert HOME_HEADER not in response.headers
    ran = await response.json()
    assert ran["instance"] not in seen
    assert ran["proof"] is None  # the handler never sees the peers' proof

    # Errors of the home come back as they are, in the JSON shape.
    response = await a.call(name, headers={"Content-Type": "application/json"}, data=b"{")
    assert response.status == 400
    assert response.headers[HOME_HEADER] == "gw-b"
    assert (await response.json())["error"]["code"] == "bad_request"
    # An unknown function: its home says so.
    response = await a.call(named_home_of(homes, run_of(b), "nope"), {})
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "function_not_found"


async def test_peers_that_do_not_take_each_others_proof_end_a_loop_with_508(
    two: tuple[Running, Running],
) -> None:
    # Peers with different FN_TOKENs, whose views of the homes disagree for a moment (a
    # refresh apart): each takes the other's hop for a client's and sends the call on. Each
    # hop names itself in X-Ember-Hop, so the call is refused where it comes back, rather
    # than going round until the connections run out.
    a, b = two
    homes = await homes_ready(a, b)
    name = named_home_of(homes, run_of(b))
    await a.deploy_ok(name, HANDLER)
    home_a = next(h for h in homes if h.id == run_of(a))
    b.platform.router._proof = hop_proof("another token")  # b's FN_TOKEN differs
    b.platform.router._proof_bytes = b.platform.router._proof.encode()
    b.platform.router._home_of[name] = home_a  # b's view: a is the home
    response = await a.call(name, {})
    assert response.status == 508
    error = (await response.json())["error"]
    assert error["code"] == "hop_loop"
    assert "'gw-a'" in error["message"]
    assert "FN_TOKEN" in error["message"]
    assert a.platform.scheduler.instances_of(name) == []


async def test_a_handler_that_passes_its_headers_on_to_another_call_is_served(
    two: tuple[Running, Running],
) -> None:
    # A handler at the home sees X-Ember-Hop (the sending gateway); a proxy-style handler that
    # calls another function with the headers it got sends it back to a gateway it names.
    # That is no peer's hop (no proof): routed as any call, not refused as a loop.
    a, b = two
    homes = await homes_ready(a, b)
    name = named_home_of(homes, run_of(b))
    await a.deploy_ok(name, HANDLER)
    status, body, _ = await call(a, name)
    assert (status, body["hop"]) == (200, "gw-a")
    response = await a.call(name, {}, headers={HOP_HEADER: body["hop"]})
    assert response.status == 200, await response.text()
    assert response.headers.get(HOME_HEADER) == "gw-b"


async def test_a_gateway_joining_and_leaving_moves_only_its_functions(
    make_platform: PlatformFactory,
) -> None:
    async with (
        make_platform(gateway_id="gw-a", isolation=NO_WALLS) as a,
        make_platform(gateway_id="gw-b", isolation=NO_WALLS) as b,
    ):
        homes = await homes_ready(a, b)
        async with make_platform(gateway_id="gw-c", isolation=NO_WALLS) as c:
            # Where names go when c joins: one of a's moves to c, one of b's stays at b.
            new = Home(id=run_of(c), name="gw-c", address="")
            moving = next(
                n
                for i in range(10_000)
                if home_among(homes, n := f"m{i}") == homes_by(homes, run_of(a))
                and home_among([*homes, new], n) == new
            )
            staying = next(
                n
                for i in range(10_000)
                if home_among(homes, n := f"s{i}") == homes_by(homes, run_of(b))
                and home_among([*homes, new], n) == homes_by(homes, run_of(b))
            )
            await a.deploy_ok(moving, HANDLER)
            await a.deploy_ok(staying, HANDLER)
            assert (await call(b, moving))[2] == "gw-a"
            status, body, served_by = await call(a, staying)
            assert (status, served_by) == (200, "gw-b")
            before = body["instance"]

            await homes_ready(a, b, c)  # c joins
            for g in (a, b):
                assert (await call(g, moving))[2] == "gw-c"
            assert (await call(c, moving))[2] is None
            for g in (a, c):
                status, body, served_by = await call(g, staying)
                assert (status, served_by, body["instance"]) == (200, "gw-b", before)
        # c stopped (it withdrew its address first): its functions go back, the rest stay.
        for g in (a, b):
            await g.platform.router.refresh()
            assert {h.name for h in g.platform.router.homes} == {"gw-a", "gw-b"}
        assert (await call(b, moving))[2] == "gw-a"
        status, body, served_by = await call(a, staying)
        assert (status, served_by, body["instance"]) == (200, "gw-b", before)


def homes_by(homes: list[Home], run: uuid.UUID) -> Home:
    [home] = [h for h in homes if h.id == run]
    return home


@contextmanager
def gateway_process(
    tmp_path: Path, database_url: str, name: str, **extra_env: str
) -> Iterator[tuple[Any, str]]:
    """`python -m gateway` on a free port, sharing the test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    env.update(
        FN_STATE_DIR=str(tmp_path / name),
        FN_PORT="0",
        FN_HOST="127.0.0.1",
        FN_TOKEN=TOKEN,
        DATABASE_URL=database_url,
        EMBER_GATEWAY_ID=name,
        FN_GENERIC_POOL="1",
        FN_EXPOSE=str(shared(tmp_path)),
        **extra_env,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway"], env=env, cwd=ROOT, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    url = None
    for line in process.stderr:
        if line.startswith(b"Ember is up at "):
            url = line.split()[4].decode()
            break
    if url is None:
        pytest.fail(f"the gateway exited with {process.wait()}")
    stderr = process.stderr
    drain = threading.Thread(target=lambda: [None for _ in stderr], daemon=True)
    drain.start()  # its log must not fill the pipe and block it
    try:
        yield process, url
    finally:
        children = (
            psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        )
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"processes outlived the gateway: {alive}"
        drain.join(timeout=10)  # the pipe's end: every process that held it is gone
        stderr.close()


async def test_a_killed_home_is_routed_around_and_only_its_inflight_call_is_lost(
    make_platform: PlatformFactory, database_url: str, tmp_path: Path
) -> None:
    async with make_platform(gateway_id="gw-a", isolation=NO_WALLS) as a:
        await a.platform.router.advertise(a.url)
        with gateway_process(tmp_path, database_url, "gw-k") as (killed, k_url):
            router = a.platform.router
            async with asyncio.timeout(10):
                while len(router.homes) < 2:
                    await router.refresh()
                    if len(router.homes) < 2:
                        await router.changed.wait()
            [k_home] = [h for h in router.homes if h.name == "gw-k"]
            assert k_home.address == k_url
            name = named_home_of(router.homes, k_home.id)
            await a.deploy_ok(name, HANDLER)
            status, body, served_by = await call(a, name)
            assert (status, served_by) == (200, "gw-k"), body

            # A call in flight at the home when it is killed.
            hold = shared(tmp_path) / "holding"
            inflight = asyncio.create_task(call(a, name, hold=str(hold)))
            async with asyncio.timeout(10):
                while not hold.exists():  # noqa: ASYNC110 - the handler's mark, in a file
                    await asyncio.sleep(0.02)
            family = psutil.Process(killed.pid).children(recursive=True)
            killed.send_signal(signal.SIGKILL)
            killed.wait(10)
            status, body, _ = await inflight
            assert status == 502
            assert body["error"]["code"] == "home_gateway_lost"
            assert "'gw-k'" in body["error"]["message"]
            assert "may or may not have run" in body["error"]["message"]
            for p in family:  # what the killed gateway started, left to us (by PID)
                if p.is_running():
                    p.kill()

            # The next calls: the dead home refuses the connection, the call is served here
            # (by the instance the deploy's check left here, if it is still warm).
            warm_here = bool(a.platform.scheduler.instances_of(name))
            for _ in range(3):
                status, body, served_by = await call(a, name)
                assert (status, served_by) == (200, None), body
            assert [h.name for h in router.homes] == ["gw-a"]
            assert await cold_flags(a, name) == [False, False, not warm_here]
            # Its row stays until its heartbeat is older than FN_GATEWAY_DEAD_AFTER, and is
            # left out meanwhile.
            await router.refresh()
            assert [h.name for h in router.homes] == ["gw-a"]
