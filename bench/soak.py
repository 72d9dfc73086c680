"""`python -m bench.soak [--minutes 10] [--concurrency 64]`: a long closed-loop load on one
gateway, to show its memory stays flat and no call fails.

Every `--slice-s` seconds it prints calls/s, errors, p50/p99 and the gateway's memory (RSS and
USS of the gateway process alone; instances are separate processes). The verdict: no errors, and
the gateway's USS at the end within 10 % (or 20 MB) of its USS after the first two slices
(warm-up: caches, buffers, allocator arenas). Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import uvloop

from bench.platform import Gateway
from bench.run import ECHO, RESULTS, Admin, Row, in_fresh_database, quantiles_ms

BODY = orjson.dumps({"data": "x" * 1000})


@dataclass(slots=True)
class Slice:
    at_s: float
    calls_per_s: float
    errors: int
    p50_ms: float
    p99_ms: float
    rss_mb: float
    uss_mb: float


async def _load(url: str, concurrency: int, duration_s: float) -> tuple[int, int, list[float]]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < deadline:
                try:
                    async with http.post(url, data=BODY, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, OSError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), errors, latencies


def _client(url: str, concurrency: int, duration_s: float) -> tuple[int, int, list[float]]:
    return uvloop.run(_load(url, concurrency, duration_s))


def _slice(
    url: str, concurrency: int, duration_s: float, processes: int
) -> tuple[int, int, list[float]]:
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(_client, [(url, c, duration_s) for c in shares])
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        [x for r in results for x in r[2]],
    )


async def soak(
    minutes: float, concurrency: int, slice_s: float, work: Path, db: str
) -> dict[str, Any]:
    gateway = Gateway.start(work / "soak", db)
    slices: list[Slice] = []
    try:
        async with aiohttp.ClientSession() as http:
            await Admin(http, gateway.url).deploy("echo", ECHO)
        process = psutil.Process(gateway.process.pid)
        url = f"{gateway.url}/fn/echo"
        started = time.monotonic()
        while time.monotonic() - started < minutes * 60:
            calls, errors, latencies = await asyncio.to_thread(_slice, url, concurrency, slice_s, 2)
            memory = process.memory_full_info()
            p50, p99, _ = quantiles_ms(latencies or [0.0])
            row = Slice(
                at_s=round(time.monotonic() - started),
                calls_per_s=calls / slice_s,
                errors=errors,
                p50_ms=p50,
                p99_ms=p99,
                rss_mb=memory.rss / 1e6,
                uss_mb=memory.uss / 1e6,
            )
            slices.append(row)
            print(
                f"{row.at_s:5.0f} s  {row.calls_per_s:7.0f} calls/s  {row.errors:4d} errors  "
                f"p50 {row.p50_ms:6.2f} ms  p99 {row.p99_ms:7.2f} ms  "
                f"gateway RSS {row.rss_mb:6.1f} MB  USS {row.uss_mb:6.1f} MB",
                flush=True,
            )
    finally:
        gateway.stop()
    baseline = slices[min(1, len(slices) - 1)].uss_mb
    final = slices[-1].uss_mb
    growth_mb = final - baseline
    errors = sum(s.errors for s in slices)
    flat = growth_mb <= max(20.0, 0.1 * baseline)
    return {
        "minutes": minutes,
        "concurrency": concurrency,
        "errors": errors,
        "uss_after_warmup_mb": baseline,
        "uss_final_mb": final,
        "uss_growth_mb": growth_mb,
        "flat": flat,
        "passed": flat and errors == 0,
        "slices": [asdict(s) for s in slices],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slice-s", type=float, default=30.0)
    args = parser.parse_args()
    report: dict[str, Any] = {}

    async def bench(quick: bool, database_url: str, work: Path) -> list[Row]:
        report.update(await soak(args.minutes, args.concurrency, args.slice_s, work, database_url))
        return []

    started = dt.datetime.now(dt.UTC)
    uvloop.run(in_fresh_database(bench, False))
    report["date"] = started.isoformat(timespec="seconds")
    verdict = "PASSED" if report["passed"] else "FAILED"
    print(
        f"{verdict}: {report['errors']} errors; gateway USS {report['uss_after_warmup_mb']:.1f} MB "
        f"after warm-up, {report['uss_final_mb']:.1f} MB at the end "
        f"({report['uss_growth_mb']:+.1f} MB)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    raise SystemExit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
