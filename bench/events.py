"""`python -m bench.events [--quick]`: durable events and async invocations, end to end.

Measured on a real gateway process with a real Postgres (embedded, or DATABASE_URL):

- throughput: N events published to a topic by 32 concurrent publishers (each 202 means
  committed), one per request and in batches of 10 (`POST /v1/events`), until every delivery
  has run its (trivial) handler: events/s end to end;
  the same for async invocations (`Prefer: respond-async`); and, as the in-run baseline,
  synchronous calls of the same handler at the same concurrency;
- added latency of the async path when idle: from the 202 (the call committed) to the
  handler's first line, read from the handler's own clock, one call at a time; next to it the
  round trip of a synchronous call of the same handler.

Prints a table and writes bench/results/events.json.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.platform import Gateway, admin_headers
from bench.run import Row, bench_main, latency_row

TRIVIAL = "def handler(event, context):\n    return None\n"
CLOCK = "import time\n\ndef handler(event, context):\n    return {'t': time.time()}\n"
CONCURRENCY = 32
BATCH = 10


async def _metric(http: aiohttp.ClientSession, url: str, name: str, **labels: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _closed_loop(http: aiohttp.ClientSession, n: int, request: Any) -> None:
    """Send `n` requests from CONCURRENCY workers; each must succeed."""
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            await request(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def end_to_end(http: aiohttp.ClientSession, url: str, n: int, kind: str) -> float:
    """Submit n events (kind "topic") or async calls (kind "async"); returns events/s from
    the first submission to the last handler success."""
    function = "sink-async" if kind == "async" else "sink"
    before = await _metric(
        http, url, "ember_delivery_attempts_total", function=function, outcome="succeeded"
    )
    headers = {**admin_headers(), "Content-Type": "application/json"}

    async def publish(i: int) -> None:
        async with http.post(
            f"{url}/v1/events/bench", data=b'{"i": %d}' % i, headers=headers
        ) as response:
            if response.status != 202:
                raise RuntimeError(f"publish answered {response.status}: {await response.text()}")

    async def submit(i: int) -> None:
        async with http.post(
            f"{url}/fn/{function}",
            data=b'{"i": %d}' % i,
            headers={"Prefer": "respond-async", "Content-Type": "application/json"},
        ) as response:
            if response.status != 202:
                raise RuntimeError(f"async call answered {response.status}")

    async def publish_batch(i: int) -> None:
        body = orjson.dumps(
            [{"topic": "bench", "data": {"i": i * BATCH + j}} for j in range(BATCH)]
        )
        async with http.post(f"{url}/v1/events", data=body, headers=headers) as response:
            if response.status != 202:
                raise RuntimeError(f"publish answered {response.status}: {await response.text()}")

    t0 = time.perf_counter()
    if kind == "batch":
        await _closed_loop(http, n // BATCH, publish_batch)
    else:
        await _closed_loop(http, n, publish if kind == "topic" else submit)
    while True:  # the platform has no "all done" event to wait on: poll its metrics
        done = await _metric(
            http, url, "ember_delivery_attempts_total", function=function, outcome="succeeded"
        )
        if done - before >= n:
            break
        await asyncio.sleep(0.01)
    return n / (time.perf_counter() - t0)


async def sync_throughput(http: aiohttp.ClientSession, url: str, n: int) -> float:
    async def call(i: int) -> None:
        async with http.post(
            f"{url}/fn/sink", data=b'{"i": %d}' % i, headers={"Content-Type": "application/json"}
        ) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"call answered {response.status}")

    t0 = time.perf_counter()
    await _closed_loop(http, n, call)
    return n / (time.perf_counter() - t0)


async def async_added_latency(
    http: aiohttp.ClientSession,
    url: str,
    n: int,
) -> tuple[list[float], list[float]]:
    """(accept -> handler start, sync round trip) in seconds, one call at a time."""
    added, sync = [], []
    headers = {"Prefer": "respond-async", "Content-Type": "application/json"}
    for _ in range(n):
        async with http.post(f"{url}/fn/clock", data=b"{}", headers=headers) as response:
            accepted_at = time.time()
            activation = (await response.json())["activation_id"]
        while True:
            async with http.get(
                f"{url}/v1/activations/{activation}", headers=admin_headers()
            ) as response:
                data = await response.json()
            if data["status"] == "succeeded":
                break
            await asyncio.sleep(0.002)
        added.append(data["result"]["t"] - accepted_at)
        t0 = time.perf_counter()
        async with http.post(
            f"{url}/fn/clock", data=b"{}", headers={"Content-Type": "application/json"}
        ) as response:
            await response.read()
        sync.append(time.perf_counter() - t0)
    return added, sync


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    n = 2000 if quick else 10000
    samples = 100 if quick else 300
    gateway = Gateway.start(work / "state", database_url)
    rows = []
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY + 4)
        ) as http:
            url = gateway.url
            for name, source in (("sink", TRIVIAL), ("sink-async", TRIVIAL), ("clock", CLOCK)):
                async with http.post(
                    f"{url}/v1/functions",
                    headers=admin_headers(),
                    json={"name": name, "source": source},
                ) as response:
                    assert response.status == 201, await response.text()
            async with http.put(f"{url}/v1/topics/bench", headers=admin_headers()) as response:
                assert response.status in (200, 201)
            async with http.post(
                f"{url}/v1/functions/sink/triggers",
                headers=admin_headers(),
                json={"topic": "bench"},
            ) as response:
                assert response.status == 201, await response.text()

            await end_to_end(http, url, 200, "topic")  # warm up: instances, connections
            sync_rate = await sync_throughput(http, url, n)
            topic_rate = await end_to_end(http, url, n, "topic")
            batch_rate = await end_to_end(http, url, n, "batch")
            async_rate = await end_to_end(http, url, n, "async")
            added, sync = await async_added_latency(http, url, samples)
    finally:
        gateway.stop()
    sync_row = latency_row("sync call round trip (baseline), idle", sync)
    added_row = latency_row("async: accept -> handler start, idle", added, target="p50 <= 10 ms")
    added_row.met = added_row.p50_ms is not None and added_row.p50_ms <= 10
    if sync_row.p50_ms and added_row.p50_ms:
        added_row.ratio = f"{added_row.p50_ms / sync_row.p50_ms:.1f}x sync"
    rows += [
        Row(f"sync calls, c={CONCURRENCY} (baseline)", calls_per_s=sync_rate),
        Row(
            f"events: publish -> handler done, c={CONCURRENCY}",
            calls_per_s=topic_rate,
            ratio=f"{topic_rate / sync_rate:.2f}x sync",
            target=">= 2,000/s",
            met=topic_rate >= 2000,
        ),
        Row(
            f"events in batches of {BATCH}: publish -> handler done, c={CONCURRENCY}",
            calls_per_s=batch_rate,
            ratio=f"{batch_rate / sync_rate:.2f}x sync",
            target=">= 2,000/s",
            met=batch_rate >= 2000,
        ),
        Row(
            f"async calls: submit -> handler done, c={CONCURRENCY}",
            calls_per_s=async_rate,
            ratio=f"{async_rate / sync_rate:.2f}x sync",
            target=">= 2,000/s",
            met=async_rate >= 2000,
        ),
        sync_row,
        added_row,
    ]
    return rows


if __name__ == "__main__":
    bench_main("bench.events", run)
