"""`python -m bench.deps [--quick]`: cold starts of a function with dependencies.

On one gateway (a 1 s keep-alive so that functions scale to zero, a generic pool of 4), in one
run:

- cold start of a trivial function (the in-run baseline), and of a function that imports a
  mid-size library (`requests`: urllib3, idna, charset_normalizer, certifi), each the first call
  after scale to zero, served by specializing a generic instance;
- the naive baseline: a fresh interpreter that imports the same library from the same
  pip-installed environment (what a platform without warm generic instances pays per start);
- the deploy: the first one builds the environment, later ones with the same requirements
  reuse it.

Prints a table and writes bench/results/deps.json.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from bench.platform import Gateway, admin_headers
from bench.run import (
    Admin,
    Row,
    bench_main,
    cold_starts,
    latency_row,
    quantiles_ms,
    until,
)

REQUIREMENTS = "requests==2.32.3\n"
USES_REQUESTS = (
    "import requests\n\ndef handler(event, context):\n"
    "    return {'requests': requests.__version__}\n"
)
TRIVIAL = "def handler(event, context):\n    return {'ok': True}\n"


async def deploy(
    http: aiohttp.ClientSession, url: str, name: str, source: str, requirements: str = ""
) -> dict[str, object]:
    body = {"name": name, "source": source, "requirements": requirements}
    async with http.post(
        f"{url}/v1/functions", headers=admin_headers(), data=orjson.dumps(body)
    ) as response:
        data: dict[str, object] = await response.json()
        if response.status != 201:
            raise RuntimeError(f"deploy {name}: {response.status} {data}")
    return data


def naive_starts(site: Path, n: int) -> list[float]:
    """A fresh interpreter importing requests from the environment, n times."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import requests"], env=env, check=True)
        samples.append(time.perf_counter() - t0)
    return samples


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    n = 10 if quick else 30
    gateway = Gateway.start(work / "state", database_url, FN_KEEP_ALIVE="1s", FN_GENERIC_POOL="4")
    rows = []
    try:
        async with aiohttp.ClientSession() as http:
            admin = Admin(http, gateway.url)
            t0 = time.perf_counter()
            first = await deploy(
                http, gateway.url, "dep-0", USES_REQUESTS + "\nV = 0\n", REQUIREMENTS
            )
            build_s = time.perf_counter() - t0
            reuse = []
            for i in range(1, n):
                t0 = time.perf_counter()
                await deploy(
                    http, gateway.url, f"dep-{i}", USES_REQUESTS + f"\nV = {i}\n", REQUIREMENTS
                )
                reuse.append(time.perf_counter() - t0)
            for i in range(n):
                await deploy(http, gateway.url, f"plain-{i}", TRIVIAL + f"\nV = {i}\n")
            names = [f"dep-{i}" for i in range(n)]
            plain = [f"plain-{i}" for i in range(n)]

            async def scaled_to_zero() -> bool:
                counts = await admin.instances()
                return all(counts.get(x, 0) == 0 for x in names + plain)

            await until(scaled_to_zero, 60, "scale to zero")
            plain_cold = await cold_starts(admin, plain, pool_size=4)
            dep_cold = await cold_starts(admin, names, pool_size=4)
            site = work / "state" / "envs" / str(first["environment"])
            naive = await asyncio.to_thread(naive_starts, site, n)
    finally:
        gateway.stop()
    base = quantiles_ms(plain_cold)[0]
    dep_p50 = quantiles_ms(dep_cold)[0]
    naive_p50 = quantiles_ms(naive)[0]
    rows += [
        latency_row("cold, trivial function (generic pool): baseline", plain_cold, ratio="1.00x"),
        latency_row(
            "cold, function importing requests (generic pool)",
            dep_cold,
            ratio=f"{dep_p50 / base:.1f}x trivial",
        ),
        latency_row(
            "naive: fresh interpreter + import requests",
            naive,
            ratio=f"{naive_p50 / dep_p50:.1f}x Ember",
        ),
        Row("deploy with requirements, first (pip install)", p50_ms=build_s * 1000),
        latency_row("deploy with the same requirements (environment reused)", reuse),
    ]
    return rows


if __name__ == "__main__":
    bench_main("bench.deps", run)
