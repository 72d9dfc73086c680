"""`python -m bench.k8s [--quick]`: cold starts on the Kubernetes backend, side by side with local.

Everything runs here: the Kubernetes API is tests/k8s/fakeapi.py (real HTTP, the official
client; its kubelet starts each pod's invoker as a process), the scheduler is `python -m
scheduler`, the gateway `python -m gateway` with EMBER_BACKEND=kubernetes. In one run:

- local: cold start from the generic pool of a local gateway (the in-run baseline);
- kubernetes, generic pod ready: the gateway asks the scheduler, which relabels a ready generic
  pod (a PATCH), and the gateway pushes the code: the path every cold start takes while the
  generic pool has a pod;
- kubernetes, no generic pod (EMBER_GENERIC_POOL=0): the scheduler creates a pod and waits for
  it. Here a "pod start" is a fresh interpreter (~0.1 s); on a cluster add scheduling, the image
  pull and container start (seconds), which is what the generic pool saves.

The API server is on loopback, so a real cluster adds its API latency (a few ms) to the PATCH.
Prints a table and writes bench/results/k8s.json.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.platform import Gateway, admin_headers
from bench.run import Admin, Row, bench_main, cold_starts, latency_row, quantiles_ms, until
from tests.k8s.apimachinery import SCHEDULER_RULES
from tests.k8s.fakeapi import FakeKubernetes

NS = "ember-functions"
TOKEN = "bench-scheduler-token"
TRIVIAL = "def handler(event, context):\n    return {'ok': True}\n"


async def deploy_all(http: aiohttp.ClientSession, url: str, names: list[str]) -> None:
    for i, name in enumerate(names):
        body = {"name": name, "source": TRIVIAL + f"\nV = {i}\n"}
        async with http.post(f"{url}/v1/functions", headers=admin_headers(), json=body) as response:
            if response.status != 201:
                raise RuntimeError(f"deploy {name}: {response.status} {await response.text()}")


def scaled_to_zero(admin: Admin, names: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        counts = await admin.instances()
        return all(counts.get(x, 0) == 0 for x in names)

    return check


def start_scheduler(
    work: Path, database_url: str, kubeconfig: str, port: int, pool: int
) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FN_", "EMBER_"))},
        "DATABASE_URL": database_url,
        "FN_SCHEDULER_TOKEN": TOKEN,
        "EMBER_SCHEDULER_PORT": str(port),
        "KUBECONFIG": kubeconfig,
        "EMBER_NAMESPACE": NS,
        "EMBER_GENERIC_POOL": str(pool),
    }
    log = (work / f"scheduler-{port}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "scheduler"], env=env, stderr=log)


async def scheduler_generic(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(f"{url}/healthz") as response:
            if response.status != 200:
                return -1
            ready: int = (await response.json()).get("generic_ready", -1)  # -1: standby
            return ready
    except aiohttp.ClientError:
        return -1


async def k8s_cold_starts(
    work: Path, database_url: str, fake: FakeKubernetes, n: int, pool: int, port: int
) -> list[float]:
    scheduler = start_scheduler(work, database_url, fake.kubeconfig(str(work / "kc")), port, pool)
    url = f"http://127.0.0.1:{port}"
    gateway = None
    try:
        async with aiohttp.ClientSession() as http:

            async def leader() -> bool:
                return await scheduler_generic(http, url) >= 0

            await until(leader, 60, "the scheduler to lead")
            gateway = Gateway.start(
                work / f"gw-{port}",
                database_url,
                EMBER_BACKEND="kubernetes",
                EMBER_SCHEDULER_URL=url,
                FN_SCHEDULER_TOKEN=TOKEN,
                EMBER_GATEWAY_ID=f"bench-{port}",
                FN_KEEP_ALIVE="1s",
                FN_DELIVERIES="0",
            )
            admin = Admin(http, gateway.url)
            names = [f"k{port}-{i}" for i in range(n)]
            await deploy_all(http, gateway.url, names)

            await until(scaled_to_zero(admin, names), 60, "scale to zero")
            samples = []
            for name in names:

                async def full() -> bool:
                    return await scheduler_generic(http, url) >= pool

                await until(full, 60, "the generic pods to be ready")
                latency, _ = await admin.call(name)
                samples.append(latency)
            return samples
    finally:
        # Off the loop: their shutdown calls the fake API server, which this loop serves.
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        scheduler.terminate()
        await asyncio.to_thread(scheduler.wait, 30)


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    n = 10 if quick else 30
    fake = FakeKubernetes(rules=SCHEDULER_RULES)
    await fake.start()
    fake.put(
        "configmaps",
        NS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ember-invokers"}},
    )
    try:
        local = Gateway.start(
            work / "local", database_url, FN_KEEP_ALIVE="1s", FN_GENERIC_POOL="2", FN_DELIVERIES="0"
        )
        try:
            async with aiohttp.ClientSession() as http:
                admin = Admin(http, local.url)
                names = [f"local-{i}" for i in range(n)]
                await deploy_all(http, local.url, names)

                await until(scaled_to_zero(admin, names), 60, "scale to zero")
                base = await cold_starts(admin, names, pool_size=2)
        finally:
            local.stop()
        specialized = await k8s_cold_starts(work, database_url, fake, n, 2, 18181)
        started = await k8s_cold_starts(work, database_url, fake, max(5, n // 3), 0, 18182)
    finally:
        await fake.stop()
    p50 = quantiles_ms(base)[0]
    return [
        latency_row("local: cold start from the generic pool (baseline)", base, ratio="1.00x"),
        latency_row(
            "kubernetes: generic pod ready (relabel + push code)",
            specialized,
            ratio=f"{quantiles_ms(specialized)[0] / p50:.1f}x",
        ),
        latency_row(
            "kubernetes: no generic pod (pod created; here a process start)",
            started,
            ratio=f"{quantiles_ms(started)[0] / p50:.1f}x",
        ),
    ]


if __name__ == "__main__":
    bench_main("bench.k8s", run)
