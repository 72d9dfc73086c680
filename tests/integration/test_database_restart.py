"""A database that restarts: warm calls go on (no SQL on the warm path), the admin API says
503 meanwhile, and activation records written while it was down are kept and land after."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.app import build_app
from gateway.platform import Platform
from gateway.settings import Settings
from scheduler.scheduler import PoolSettings
from store.embedded import start_embedded_postgres
from tests.conftest import TOKEN, exposing, shared

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def test_platform_rides_out_a_database_restart(tmp_path: Path) -> None:
    pg = await asyncio.to_thread(start_embedded_postgres, tmp_path / "pg")
    settings = Settings(
        port=0,
        state_dir=tmp_path / "state",
        database_url=pg.url,
        token=TOKEN,
        pool=PoolSettings(generic_pool_size=1),
    )
    platform = await Platform.start(settings)
    platform.activations.retry_s = 0.05
    runner = web.AppRunner(build_app(platform), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = "http://{}:{}".format(*runner.addresses[0][:2])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}/v1/functions",
                headers=HEADERS,
                json={"name": "up", "source": "def handler(e, c):\n    return 'up'\n"},
            ) as r:
                assert r.status == 201
            async with http.post(f"{url}/fn/up") as r:
                assert await r.text() == "up"

            await asyncio.to_thread(pg.stop)
            async with http.post(f"{url}/fn/up") as r:  # warm path: no SQL
                assert (r.status, await r.text()) == (200, "up")
                down_id = r.headers["X-Ember-Activation-Id"]
            async with http.get(f"{url}/v1/functions", headers=HEADERS) as r:
                assert r.status == 503
                assert (await r.json())["error"]["code"] == "database_unavailable"

            pg = await asyncio.to_thread(start_embedded_postgres, tmp_path / "pg")
            async with http.get(f"{url}/v1/activations/{down_id}", headers=HEADERS) as r:
                assert r.status == 200  # kept in memory, then written once the database is back
            async with http.get(f"{url}/v1/functions/up/activations", headers=HEADERS) as r:
                assert r.status == 200
                ids = [a["id"] for a in (await r.json())["activations"]]
            assert down_id in ids
    finally:
        await runner.cleanup()
        await platform.stop()
        await asyncio.to_thread(pg.stop)


async def test_deliveries_ride_out_a_database_restart(tmp_path: Path) -> None:
    from events.settings import EventSettings

    out = shared(tmp_path) / "out"
    pg = await asyncio.to_thread(start_embedded_postgres, tmp_path / "pg")
    settings = Settings(
        port=0,
        state_dir=tmp_path / "state",
        database_url=pg.url,
        token=TOKEN,
        pool=PoolSettings(generic_pool_size=1, max_instances=2),
        events=EventSettings(poll_s=0.1, retry_base_s=0.05, lease_margin_s=1),
        isolation=exposing(tmp_path),
    )
    platform = await Platform.start(settings)
    runner = web.AppRunner(build_app(platform), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = "http://{}:{}".format(*runner.addresses[0][:2])
    hold = shared(tmp_path) / "hold"  # deliveries wait while it exists: mid-stream for sure
    hold.touch()
    source = (
        "import json, os, time\n"
        "def handler(event, context):\n"
        "    deadline = time.monotonic() + 20\n"
        "    while os.path.exists(context.config['HOLD']) and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    with open(context.config['OUT'], 'a') as f:\n"
        "        f.write(json.dumps(event) + '\\n')\n"
    )
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}/v1/functions",
                headers=HEADERS,
                json={
                    "name": "rec",
                    "source": source,
                    "env": {"OUT": str(out), "HOLD": str(hold)},
                },
            ) as r:
                assert r.status == 201
            for n in range(60):
                async with http.post(
                    f"{url}/fn/rec", json={"n": n}, headers={"Prefer": "respond-async"}
                ) as r:
                    assert r.status == 202
            await asyncio.to_thread(pg.stop)  # mid-stream: all are queued or held in calls
            done_while_down = len(out.read_text().splitlines()) if out.exists() else 0
            hold.unlink()  # the calls in flight finish while the database is down
            async with http.post(
                f"{url}/fn/rec", json={"n": -1}, headers={"Prefer": "respond-async"}
            ) as r:
                assert r.status == 503  # not accepted, and says so
                assert (await r.json())["error"]["code"] == "database_unavailable"
            pg = await asyncio.to_thread(start_embedded_postgres, tmp_path / "pg")
            deadline = asyncio.get_running_loop().time() + 30
            while len(seen := {json.loads(x)["n"] for x in out.read_text().splitlines()}) < 60:
                assert asyncio.get_running_loop().time() < deadline, sorted(seen)
                await asyncio.sleep(0.05)
        assert seen == set(range(60))
        assert done_while_down < 60
    finally:
        await runner.cleanup()
        await platform.stop()
        await asyncio.to_thread(pg.stop)
