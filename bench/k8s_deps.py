"""`python -m bench.k8s_deps [--quick]`: cold starts of a function with requirements on the
Kubernetes backend, side by side with local.

The same function (it imports `requests`, requirements `requests==2.32.3`) in one run:

- local: the first call after scale to zero, served by specializing a generic instance; the
  environment is already unpacked on the node (the in-run baseline);
- kubernetes, a function without requirements (the claim of a generic pod and the code push),
  and one with the same requirements that imports nothing of them (adds the fetch and the
  unpack): what the environment itself costs;
- kubernetes, node cache hit: the gateway claims a generic pod (a PATCH) and pushes the code;
  the pod fetches the environment from the node environment cache (`gateway.envcache`, which
  already has it: the deploy's import check put it there; the gateway checks the token, 304),
  checks its sha256, unpacks it into its emptyDir and imports;
- kubernetes, node cache miss: the same, with a node cache restarted empty just before the
  call, so the archive also travels from the gateway to the cache.

The API server is tests/k8s/fakeapi.py (its kubelet runs each pod as a local process: pod
starts are process starts), the scheduler `python -m scheduler`, the gateway `python -m
gateway`, all on loopback. Prints a table and writes bench/results/k8s_deps.json.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.deps import REQUIREMENTS, TRIVIAL, USES_REQUESTS, deploy
from bench.k8s import NS, TOKEN, scaled_to_zero, scheduler_generic, start_scheduler
from bench.platform import Gateway
from bench.run import Admin, Row, bench_main, cold_starts, latency_row, quantiles_ms, until
from tests.k8s.apimachinery import SCHEDULER_RULES
from tests.k8s.fakeapi import FakeKubernetes

CACHE_PORT = 18183
SCHEDULER_PORT = 18184


def start_envcache(work: Path, upstream: str, generation: int) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FN_", "EMBER_"))},
        "EMBER_ENV_UPSTREAM": upstream,
        "EMBER_ENVCACHE_PORT": str(CACHE_PORT),
        "EMBER_ENVCACHE_DIR": str(work / f"envcache-{generation}"),
    }
    log = (work / "envcache.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "gateway.envcache"], env=env, stderr=log)


async def cache_up(http: aiohttp.ClientSession) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{CACHE_PORT}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def local_cold_starts(work: Path, database_url: str, names: list[str]) -> list[float]:
    gateway = Gateway.start(
        work / "local", database_url, FN_KEEP_ALIVE="1s", FN_GENERIC_POOL="2", FN_DELIVERIES="0"
    )
    try:
        async with aiohttp.ClientSession() as http:
            admin = Admin(http, gateway.url)
            for name in names:
                await deploy(http, gateway.url, name, USES_REQUESTS, REQUIREMENTS)
            await until(scaled_to_zero(admin, names), 60, "scale to zero")
            return await cold_starts(admin, names, pool_size=2)
    finally:
        await asyncio.to_thread(gateway.stop)


ENV_ONLY = "def handler(event, context):\n    return {'ok': True}\n"
"""Has the requirements, imports none of them: the fetch and unpack without the import."""


@dataclass(slots=True, frozen=True)
class Group:
    names: list[str]
    source: str
    requirements: str = ""
    empty_cache: bool = False
    """Restart the node cache empty before each call (a miss)."""


async def k8s_cold_starts(
    work: Path, database_url: str, fake: FakeKubernetes, groups: list[Group]
) -> list[list[float]]:
    kubeconfig = fake.kubeconfig(str(work / "kc"))
    scheduler = start_scheduler(work, database_url, kubeconfig, SCHEDULER_PORT, 2)
    url = f"http://127.0.0.1:{SCHEDULER_PORT}"
    gateway = cache = None
    generation = 0
    try:
        async with aiohttp.ClientSession() as http:

            async def leader() -> bool:
                return await scheduler_generic(http, url) >= 0

            async def full() -> bool:
                return await scheduler_generic(http, url) >= 2

            await until(leader, 60, "the scheduler to lead")
            gateway = Gateway.start(
                work / "gw-k8s",
                database_url,
                EMBER_BACKEND="kubernetes",
                EMBER_SCHEDULER_URL=url,
                FN_SCHEDULER_TOKEN=TOKEN,
                EMBER_GATEWAY_ID="bench-deps",
                EMBER_ENV_URL=f"http://127.0.0.1:{CACHE_PORT}",
                FN_KEEP_ALIVE="1s",
                FN_DELIVERIES="0",
            )
            cache = start_envcache(work, gateway.url, generation)
            await until(lambda: cache_up(http), 30, "the node environment cache")
            admin = Admin(http, gateway.url)
            everything = [name for group in groups for name in group.names]
            for group in groups:
                for name in group.names:
                    await deploy(http, gateway.url, name, group.source, group.requirements)
            await until(scaled_to_zero(admin, everything), 60, "scale to zero")
            results = []
            for group in groups:
                samples = []
                for name in group.names:
                    if group.empty_cache:
                        cache.terminate()
                        await asyncio.to_thread(cache.wait, 30)
                        generation += 1
                        cache = start_envcache(work, gateway.url, generation)
                        await until(lambda: cache_up(http), 30, "the node environment cache")
                    await until(full, 60, "the generic pods to be ready")
                    samples.append((await admin.call(name))[0])
                results.append(samples)
            return results
    finally:
        # Off the loop: their shutdown calls the fake API server, which this loop serves.
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        if cache is not None:
            cache.terminate()
            await asyncio.to_thread(cache.wait, 30)
        scheduler.terminate()
        await asyncio.to_thread(scheduler.wait, 30)


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    n = 8 if quick else 20
    base = await local_cold_starts(work, database_url, [f"local-req-{i}" for i in range(n)])
    fake = FakeKubernetes(rules=SCHEDULER_RULES)
    await fake.start()
    fake.put(
        "configmaps",
        NS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ember-invokers"}},
    )
    groups = [
        Group([f"k8s-trivial-{i}" for i in range(n)], TRIVIAL),
        Group([f"k8s-env-only-{i}" for i in range(n)], ENV_ONLY, REQUIREMENTS),
        Group([f"k8s-req-hit-{i}" for i in range(n)], USES_REQUESTS, REQUIREMENTS),
        Group(
            [f"k8s-req-miss-{i}" for i in range(max(4, n // 2))], USES_REQUESTS, REQUIREMENTS, True
        ),
    ]
    try:
        trivial, env_only, hits, misses = await k8s_cold_starts(work, database_url, fake, groups)
    finally:
        await fake.stop()
    p50 = quantiles_ms(base)[0]

    def row(name: str, samples: list[float]) -> Row:
        return latency_row(name, samples, ratio=f"{quantiles_ms(samples)[0] / p50:.2f}x")

    return [
        latency_row("local: imports requests, generic instance (baseline)", base, ratio="1.00x"),
        row("kubernetes: no requirements, generic pod (claim + push code)", trivial),
        row("kubernetes: requests env, imports nothing, cache hit (+ fetch, unpack)", env_only),
        row("kubernetes: imports requests, node cache hit (+ import)", hits),
        row("kubernetes: imports requests, node cache miss (+ gateway -> cache)", misses),
    ]


if __name__ == "__main__":
    bench_main("bench.k8s_deps", run)
