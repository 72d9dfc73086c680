"""Gateways sharing one Postgres keep a function's instances on its home only: the deliveries a
peer's worker claims run at the home (gateway/handoff.py), a deploy's import check on another
gateway leaves no instance there, and a gateway whose function moves away (a join) stops its
instances of it at once, the busy ones after their call."""

from __future__ import annotations

import asyncio
import io
import json
import signal
from pathlib import Path

import psutil
import pytest
from yarl import URL

from events.settings import EventSettings
from gateway.routing import Home, home_among
from tests.conftest import TOKEN, PlatformFactory, Running, shared
from tests.integration.test_events import submit, wait_for_status
from tests.integration.test_gateway_routing import (
    NO_WALLS,
    gateway_process,
    homes_by,
    homes_ready,
    named_home_of,
    run_of,
)

pytestmark = pytest.mark.timeout(90)

HANDLER = (  # INSTANCE: which instance ran it; `hold`: wait until that file is gone
    "import os, time\n"
    "INSTANCE = os.urandom(8).hex()\n"
    "def handler(event, context):\n"
    "    hold = event.get('hold')\n"
    "    if hold:\n"
    "        open(hold + '.held', 'w').close()\n"
    "        while os.path.exists(hold):\n"
    "            time.sleep(0.01)\n"
    "    return {'instance': INSTANCE}\n"
)


async def metric(g: Running, line_start: str) -> float:
    async with g.http.get(f"{g.url}/metrics") as response:
        text = await response.text()
    found = [x for x in text.splitlines() if x.startswith(line_start)]
    return float(found[0].split()[-1]) if found else 0.0


SUCCEEDED = "ember_delivery_attempts_total"


async def until_metric(g: Running, line_start: str, at_least: float) -> None:
    """Until a gateway's metric reaches a value (it counts what the gateway did)."""
    async with asyncio.timeout(20):
        while await metric(g, line_start) < at_least:  # noqa: ASYNC110 - another gateway's
            await asyncio.sleep(0.02)


async def held(path: Path) -> None:
    """Until the handler says it holds (a file it made: the instance is another process)."""
    async with asyncio.timeout(20):
        while not path.with_suffix(".held").exists():  # noqa: ASYNC110 - the handler's mark
            await asyncio.sleep(0.01)


async def test_async_calls_and_topic_events_run_on_the_home_in_one_instance(
    make_platform: PlatformFactory,
) -> None:
    # Only a runs a delivery worker: everything is claimed by a, the function's home is b.
    async with (
        make_platform(gateway_id="gw-a", isolation=NO_WALLS) as a,
        make_platform(
            gateway_id="gw-b", isolation=NO_WALLS, events=EventSettings(workers=False)
        ) as b,
    ):
        homes = await homes_ready(a, b)
        name = named_home_of(homes, run_of(b))
        await a.deploy_ok(name, HANDLER)  # through the gateway that is not its home
        # The import check ran at a and left nothing there (its home starts the instances).
        await a.platform.scheduler.wait_until(
            lambda: not a.platform.scheduler.instances_of(name), 10
        )
        status, _ = await a.admin("PUT", "/v1/topics/orders")
        assert status in (200, 201)
        status, data = await a.admin(
            "POST", f"/v1/functions/{name}/triggers", json={"topic": "orders"}
        )
        assert status == 201, data

        # One at a time (each a warm call of the one instance), two async calls and two
        # events, submitted and published through both gateways.
        results = []
        for n, g in enumerate((a, b)):
            accepted = await submit(g, name, {"n": n})
            results.append(await wait_for_status(a, accepted["activation_id"], "succeeded"))
        for n, g in enumerate((a, b), start=3):
            status, published = await g.admin("POST", "/v1/events/orders", json={"n": 9})
            assert (status, published["deliveries"]) == (202, 1)
            await until_metric(a, f'{SUCCEEDED}{{function="{name}",outcome="succeeded"}}', n)
        # All four claimed by a, all run at b, in one instance: b's.
        assert await metric(a, 'ember_gateway_sent_deliveries_total{outcome="served"}') == 4
        assert {r["result"]["instance"] for r in results} == {results[0]["result"]["instance"]}
        assert a.platform.scheduler.instances_of(name) == []
        assert len(b.platform.scheduler.instances_of(name)) == 1
        # The peers' door takes the admin token only, and a delivery only.
        for headers, status in (
            ({"Authorization": "Bearer not-the-token"}, 401),
            ({"Authorization": f"Bearer {TOKEN}"}, 400),
        ):
            async with b.http.post(f"{b.url}/peer/deliveries", data=b"{}", headers=headers) as r:
                assert r.status == status
                assert "code" in (await r.json())["error"]
        status, listed = await b.admin("GET", f"/v1/functions/{name}/activations")
        assert status == 200
        assert sorted(x["cold"] for x in listed["activations"]) == [False] * 3 + [True]


async def test_a_delivery_whose_home_dies_during_it_is_retried_not_lost(
    make_platform: PlatformFactory, database_url: str, tmp_path: Path
) -> None:
    fast_retry = EventSettings(retry_base_s=0.05, poll_s=0.2)
    async with make_platform(gateway_id="gw-a", isolation=NO_WALLS, events=fast_retry) as a:
        await a.platform.router.advertise(a.url)
        with gateway_process(tmp_path, database_url, "gw-k", FN_DELIVERIES="0") as (killed, _):
            # (k runs no worker: a claims the delivery and hands it to k)
            router = a.platform.router
            async with asyncio.timeout(10):
                while len(router.homes) < 2:
                    await router.refresh()
                    if len(router.homes) < 2:
                        await router.changed.wait()
            [k_home] = [h for h in router.homes if h.name == "gw-k"]
            name = named_home_of(router.homes, k_home.id)
            await a.deploy_ok(name, HANDLER)
            hold = shared(tmp_path) / "hold"
            hold.touch()
            accepted = await submit(a, name, {"hold": str(hold)})
            await held(hold)  # the first attempt runs at k, claimed by a
            family = psutil.Process(killed.pid).children(recursive=True)
            killed.send_signal(signal.SIGKILL)
            killed.wait(10)
            for p in family:  # what the killed gateway started, left to us (by PID)
                if p.is_running():
                    p.kill()
            hold.unlink()  # the retry runs to the end
            done = await wait_for_status(a, accepted["activation_id"], "succeeded")
        # The home was lost during the first attempt: a retried it, and ran it itself (the
        # dead home refused the connection: nothing reached it).
        assert done["attempts"] == 2
        assert await metric(a, 'ember_gateway_sent_deliveries_total{outcome="lost"}') == 1
        assert await metric(a, 'ember_gateway_sent_deliveries_total{outcome="fallback"}') == 1
        assert len(a.platform.scheduler.instances_of(name)) == 1
        assert [h.name for h in router.homes] == ["gw-a"]


async def test_a_function_that_moves_away_is_let_go_at_once_busy_instances_after_their_call(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    async with (
        make_platform(gateway_id="gw-a", isolation=NO_WALLS) as a,
        make_platform(gateway_id="gw-b", isolation=NO_WALLS) as b,
    ):
        homes = await homes_ready(a, b)
        async with make_platform(gateway_id="gw-c", isolation=NO_WALLS) as c:
            new = Home(id=run_of(c), name="gw-c", address="")
            idle_one, busy_one = (
                next(
                    n
                    for i in range(10_000)
                    if home_among(homes, n := f"{prefix}{i}") == homes_by(homes, run_of(a))
                    and home_among([*homes, new], n) == new
                )
                for prefix in ("idle", "busy")
            )
            for name in (idle_one, busy_one):
                await a.deploy_ok(name, HANDLER)  # at its home: the check's instance stays
            pids = []
            for name in (idle_one, busy_one):
                [instance] = a.platform.scheduler.instances_of(name)
                pids.append(psutil.Process(a.platform.scheduler.pid_of(instance)))
            hold = shared(tmp_path) / "hold"
            hold.touch()
            busy_call = asyncio.create_task(a.call(busy_one, {"hold": str(hold)}))
            await held(hold)

            await homes_ready(a, b, c)  # c joins: both functions are c's now
            # a stopped the idle instance at once (not after its 10-minute keep-alive) ...
            assert a.platform.scheduler.instances_of(idle_one) == []
            _, alive = await asyncio.to_thread(psutil.wait_procs, pids[:1], 10)
            assert alive == []
            # ... and the busy one is out of the pool, its call still running; it stops after.
            assert a.platform.scheduler.instances_of(busy_one) == []
            assert not busy_call.done()
            assert pids[1].is_running()
            hold.unlink()
            response = await busy_call
            assert response.status == 200
            _, alive = await asyncio.to_thread(psutil.wait_procs, pids[1:], 10)
            assert alive == []
            # The next calls run at c, the new home, whichever gateway they land on.
            for g in (a, b):
                response = await g.call(idle_one, {})
                assert (response.status, response.headers.get("X-Ember-Home")) == (200, "gw-c")
            assert len(c.platform.scheduler.instances_of(idle_one)) == 1
            assert a.platform.scheduler.instances_of(idle_one) == []


async def test_a_gateway_not_home_yet_or_stopping_starts_no_min_warm_of_the_others(
    make_platform: PlatformFactory,
) -> None:
    # A rollout's new replica reads the policies before it advertises, and a stopping one
    # reads the homes again while it lingers: neither is home to anything then, and neither
    # may start the min_warm instances of every function of the cluster (pods, on Kubernetes).
    async with (
        make_platform(gateway_id="gw-a", isolation=NO_WALLS) as a,
        make_platform(gateway_id="gw-b", isolation=NO_WALLS) as b,
    ):
        homes = await homes_ready(a, b)
        name = named_home_of(homes, run_of(b))
        await b.deploy_ok(name, HANDLER)
        status, data = await b.admin("PUT", f"/v1/functions/{name}/policy", json={"min_warm": 1})
        assert status == 200, data
        await b.platform.scheduler.wait_until(
            lambda: len(b.platform.scheduler.instances_of(name)) == 1, 10
        )
        await a.platform.reload_policies()
        assert a.platform.scheduler.instances_of(name) == []  # (as before: not its home)

        async with make_platform(gateway_id="gw-c", isolation=NO_WALLS) as c:
            # (its start read the policies, with a and b live and itself not advertised)
            await c.platform.reload_policies()
            assert c.platform.scheduler.instances_of(name) == []

        await a.platform.router.withdraw()  # stopping
        await a.platform.router.refresh()
        await a.platform.reload_policies()
        assert a.platform.scheduler.instances_of(name) == []
        assert len(b.platform.scheduler.instances_of(name)) == 1


async def raw_request(g: Running, head: bytes) -> tuple[int, bytes]:
    """Send `head` (a request without a body) as bytes, unchecked; the status and body."""
    url = URL(g.url)
    assert url.host is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await reader.readexactly(length)
    finally:
        writer.close()


async def test_header_bytes_that_are_not_utf8_get_answers_not_internal_errors(
    make_platform: PlatformFactory,
) -> None:
    async with (
        make_platform(gateway_id="gw-a", isolation=NO_WALLS) as a,
        make_platform(gateway_id="gw-b", isolation=NO_WALLS) as b,
    ):
        homes = await homes_ready(a, b)
        name = named_home_of(homes, run_of(b))
        await a.deploy_ok(name, HANDLER)
        # The peers' door: a token that is not even text is a wrong token.
        status, body = await raw_request(
            b,
            b"POST /peer/deliveries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        assert status == 401, body
        assert json.loads(body)["error"]["code"] == "unauthorized"
        # A forged hop whose proof is not ASCII is no hop: the call goes to the home.
        status, body = await raw_request(
            a,
            f"GET /fn/{name} HTTP/1.1\r\nHost: x\r\nX-Ember-Hop: gw-b\r\n".encode()
            + b"X-Ember-Hop-Proof: \xc3\xa9\xff\r\nConnection: close\r\n\r\n",
        )
        assert status == 200, body
        assert a.platform.scheduler.instances_of(name) == []


async def test_an_event_as_large_as_publishing_takes_is_handed_to_its_home(
    make_platform: PlatformFactory,
) -> None:
    # The admin API takes a body up to its limit (a deploy's); the hand-off adds the
    # delivery's metadata to the payload, and the home must take that too.
    small = {"max_source_bytes": 1024, "max_body_bytes": 64 << 10, "isolation": NO_WALLS}
    async with (
        make_platform(gateway_id="gw-a", **small) as a,
        make_platform(gateway_id="gw-b", events=EventSettings(workers=False), **small) as b,
    ):
        homes = await homes_ready(a, b)
        name = named_home_of(homes, run_of(b))
        await a.deploy_ok(name, HANDLER)
        status, _ = await a.admin("PUT", "/v1/topics/big")
        assert status in (200, 201)
        status, data = await a.admin(
            "POST", f"/v1/functions/{name}/triggers", json={"topic": "big"}
        )
        assert status == 201, data
        admin_max = 1024 * 4 // 3 + (1 << 20)  # gateway/app.py: the admin API's limit
        event = json.dumps({"pad": "x" * (admin_max - 100)}).encode()
        status, published = await a.admin(
            "POST",
            "/v1/events/big",
            data=io.BytesIO(event),
            headers={"Content-Type": "application/json"},
        )
        assert (status, published["deliveries"]) == (202, 1)
        await until_metric(a, f'{SUCCEEDED}{{function="{name}",outcome="succeeded"}}', 1)
        assert await metric(a, 'ember_gateway_sent_deliveries_total{outcome="served"}') == 1
        assert len(b.platform.scheduler.instances_of(name)) == 1
