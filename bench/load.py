"""Load generators: sequential latency and closed-loop throughput over keep-alive connections.

Throughput runs in several client processes, so the client is not the bottleneck of one core.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass

import aiohttp
import uvloop

from invoker.protocol import Connection, InvokeRequest


@dataclass(slots=True)
class Load:
    url: str
    body: bytes
    content_type: str = "application/json"


async def sequential(load: Load, n: int, *, warmup: int = 50) -> list[float]:
    """Latency in seconds of `n` calls made one after another on one connection."""
    latencies = []
    connector = aiohttp.TCPConnector(limit=1)
    headers = {"Content-Type": load.content_type}
    async with aiohttp.ClientSession(connector=connector) as http:
        for i in range(n + warmup):
            t0 = time.perf_counter()
            async with http.post(load.url, data=load.body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{load.url} answered {response.status}")
            if i >= warmup:
                latencies.append(time.perf_counter() - t0)
    return latencies


async def sequential_direct(
    host: str, port: int, body: bytes, n: int, *, warmup: int = 50
) -> list[float]:
    """The same, straight to an invoker instance over its wire protocol."""
    conn = await Connection.open(host, port)
    meta: InvokeRequest = {
        "op": "invoke",
        "id": "bench",
        "timeout_s": 30,
        "method": "POST",
        "path": "/",
        "query": "",
        "headers": [],
        "content_type": "application/json",
    }
    latencies = []
    try:
        for i in range(n + warmup):
            t0 = time.perf_counter()
            reply, _ = await conn.call(meta, body)
            if not reply.get("ok"):
                raise RuntimeError(f"direct call failed: {reply}")
            if i >= warmup:
                latencies.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return latencies


async def _closed_loop(
    load: Load,
    concurrency: int,
    duration_s: float,
) -> tuple[int, int, list[float]]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": load.content_type}
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                async with http.post(load.url, data=load.body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), errors, latencies


def _process_main(
    load: Load,
    concurrency: int,
    duration_s: float,
) -> tuple[int, int, list[float]]:
    return uvloop.run(_closed_loop(load, concurrency, duration_s))


def throughput(
    load: Load,
    concurrency: int,
    duration_s: float,
    processes: int = 2,
) -> tuple[float, int, list[float]]:
    """Calls/s of `concurrency` clients calling back to back for `duration_s`, in processes."""
    processes = max(1, min(processes, concurrency))
    shares = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.starmap(_process_main, [(load, c, duration_s) for c in shares])
    calls = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    # Each process times its own loop, so process start-up is not counted.
    return calls / duration_s, errors, latencies
