"""The endpoints the dashboard and `fn logs` read, against a real platform: logs since a time
and followed live over Server-Sent Events, stats over time, the pool, and the simulator run on
a function's own recorded calls."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from gateway import insights
from tests.conftest import Running

ECHO = "def handler(event, context):\n    print('got', event)\n    return event\n"


async def _events(response: aiohttp.ClientResponse) -> Any:
    """The data of each `event: activation` of a Server-Sent Events stream."""
    event = None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "activation":
            yield json.loads(line[6:])


async def test_logs_since_and_follow(running: Running) -> None:
    await running.deploy_ok("echo", ECHO)
    for i in range(3):
        assert (await running.call("echo", {"n": i})).status == 200
    status, data = await running.admin("GET", "/v1/functions/echo/logs?since=10m")
    assert status == 200
    assert [a["logs"] for a in data["activations"]] == [f"got {{'n': {i}}}\n" for i in range(3)]
    status, data = await running.admin("GET", "/v1/functions/echo/logs?since=soon")
    assert (status, data["error"]["code"]) == (400, "bad_since")
    status, data = await running.admin("GET", "/v1/functions/nosuch/logs")
    assert (status, data["error"]["code"]) == (404, "function_not_found")

    async with running.http.get(
        f"{running.url}/v1/functions/echo/logs?since=10m&follow=1",
        headers=running.admin_headers,
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        stream = _events(response)
        seen = [(await anext(stream))["logs"] for _ in range(3)]  # the ones before
        assert seen[0] == "got {'n': 0}\n"
        assert (await running.call("echo", {"n": "live"})).status == 200
        live = await asyncio.wait_for(anext(stream), timeout=10)
        assert live["logs"] == "got {'n': 'live'}\n"
        assert live["cold"] is False


async def test_a_follow_stream_ends_when_the_gateway_stops_or_its_client_goes(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream writes only when there is news (or a keep-alive every 15 s): it used to notice
    # neither a stopping gateway nor a client that had gone, so every stop with a follower
    # (`fn logs --follow`, an open dashboard) waited the whole shutdown_timeout_s (10 s).
    await running.deploy_ok("echo", ECHO)
    url = f"{running.url}/v1/functions/echo/logs?follow=1"
    stream = insights.stream_activations
    ended: list[asyncio.Event] = []

    async def watched(*args: Any) -> Any:
        ended.append(asyncio.Event())
        try:
            return await stream(*args)
        finally:
            ended[-1].set()

    monkeypatch.setattr(insights, "stream_activations", watched)
    async with running.http.get(url, headers=running.admin_headers) as response:
        assert response.status == 200
    async with asyncio.timeout(5):  # the client has gone: the stream ends (within a poll)
        await ended[0].wait()

    async with running.http.get(url, headers=running.admin_headers) as response:
        assert response.status == 200
        running.platform.stopping.set()
        async with asyncio.timeout(5):
            assert await response.content.read() == b""  # the end of the stream, at once
    assert ended[1].is_set()


async def test_stats_pool_and_simulation(running: Running) -> None:
    await running.deploy_ok("echo", ECHO)
    for i in range(5):
        assert (await running.call("echo", {"n": i})).status == 200
    assert (await running.call("echo", data=b"x", headers={"Content-Type": "x/y"})).status == 200
    status, stats = await running.admin("GET", "/v1/functions/echo/stats?since=1h")
    assert status == 200, stats
    assert stats["calls"] == 6
    assert stats["errors"] == 0
    assert stats["cold"] + stats["warm"] == 6
    assert sum(p["calls"] for p in stats["series"]) == 6
    assert stats["p99_ms"] >= stats["p50_ms"] > 0
    assert stats["warm_instances"] >= 1
    assert stats["policy"]["prewarm"] == "adaptive"

    status, pool = await running.admin("GET", "/v1/pool")
    assert status == 200
    echo = [i for i in pool["instances"] if i["function"] == "echo"]
    assert [i["state"] for i in echo] == ["ready"]
    assert pool["specialized"] >= 1

    status, simulated = await running.admin(
        "GET", "/v1/functions/echo/simulate?since=1h&policy=fixed:10m&policy=histogram"
    )
    assert status == 200, simulated
    assert simulated["calls"] == 6
    policies = [r["policy"] for r in simulated["results"]]
    assert policies[:2] == ["fixed:600s", "histogram"]  # (and the oracle)
    assert all(r["calls"] == 6 and r["cold"] >= 1 for r in simulated["results"])
    status, data = await running.admin("GET", "/v1/functions/echo/simulate?policy=nope")
    assert (status, data["error"]["code"]) == (400, "bad_policy")


async def test_logs_stats_and_simulate_keep_to_the_namespace(running: Running) -> None:
    """A key of team-a reads its own functions' logs, stats and simulation, by their short
    names, and never default's function of the same name; the pool is the admin's."""
    from tests.integration.test_tenancy_auth import bearer, create_key

    team_a = await create_key(running, "deployer", namespace="team-a")
    reader_a = await create_key(running, "reader", namespace="team-a")
    await running.deploy_ok("echo", ECHO)
    status, data = await running.admin(
        "POST", "/v1/functions", headers=bearer(team_a), json={"name": "echo", "source": ECHO}
    )
    assert status == 201, data
    assert (await running.call("echo", {"who": "default"})).status == 200
    for i in range(2):
        assert (await running.call("team-a/echo", {"who": i})).status == 200

    headers = bearer(reader_a)
    status, data = await running.admin("GET", "/v1/functions/echo/logs?since=10m", headers=headers)
    assert status == 200, data
    assert [(a["function"], a["namespace"]) for a in data["activations"]] == [
        ("echo", "team-a")
    ] * 2
    assert all("default" not in a["logs"] for a in data["activations"])
    status, data = await running.admin("GET", "/v1/functions/echo/stats", headers=headers)
    assert (status, data["calls"], data["namespace"], data["function"]) == (
        200,
        2,
        "team-a",
        "echo",
    )
    status, data = await running.admin(
        "GET", "/v1/functions/echo/simulate?policy=fixed:10m", headers=headers
    )
    assert (status, data["calls"], data["namespace"]) == (200, 2, "team-a")
    # default's echo, as the admin sees it: one call
    status, data = await running.admin("GET", "/v1/functions/echo/stats")
    assert (status, data["calls"], data["namespace"]) == (200, 1, "default")
    # another namespace's, by asking for it: refused
    status, data = await running.admin(
        "GET", "/v1/functions/echo/logs", headers=bearer(reader_a, "default")
    )
    assert status == 403, data
    async with running.http.get(
        f"{running.url}/v1/functions/echo/logs?follow=1", headers=headers
    ) as response:
        assert response.status == 200
        first = await anext(aiter(_events(response)))
    assert first["namespace"] == "team-a"
    status, data = await running.admin("GET", "/v1/pool", headers=bearer(team_a))
    assert status == 403, data
    status, data = await running.admin("GET", "/v1/pool")
    assert status == 200
    assert {(i["namespace"], i["function"]) for i in data["instances"] if i["function"]} >= {
        ("default", "echo"),
        ("team-a", "echo"),
    }
