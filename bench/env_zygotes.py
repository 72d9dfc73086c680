"""`python -m bench.env_zygotes [--quick]`: the first instance of a function whose
environment's zygote exists (`fn env trust`), next to importing and a fresh interpreter.

In one run, on one gateway with templates off (no function has a template: every cold start
below is an instance that has no copy of the function yet), for a function that imports
`requests` and one that imports `numpy`:

- a fresh interpreter that imports the library (the naive baseline);
- the first call after scale to zero, environment not trusted: a prewarmed generic instance
  is specialized, and imports the library;
- the same once the environment is trusted: the instance is a fork of the environment's
  zygote (the library imported already), then specialized;
- deploy -> first answer of a new function, before and after (the deploy's import check is
  its first instance);
- the PSS of the zygote, and of an idle instance forked from it or importing itself.

Each cold-start row is the median of 3 rounds' p50s. Prints a table and writes
bench/results/env_zygotes.json.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from pathlib import Path

import aiohttp
import orjson

from bench.deps import deploy
from bench.platform import Gateway, admin_headers
from bench.run import Admin, Row, bench_main, quantiles_ms, until
from bench.templates import fresh_interpreter_ms, instance_pss

ROUNDS = 3
KINDS = {
    "requests": (
        "requests==2.32.3\n",
        "import requests\n\ndef handler(event, context):\n"
        "    return {'requests': requests.__version__}\n",
    ),
    "numpy": (
        "numpy==2.1.3\n",
        "import numpy\n\ndef handler(event, context):\n"
        "    return {'sum': int(numpy.arange(10).sum())}\n",
    ),
}
TARGETS_MS = {"requests": 40.0}


async def _keep_alive_1s(http: aiohttp.ClientSession, url: str, name: str) -> None:
    """A fixed 1 s keep-alive: the adaptive policy would learn to keep them."""
    async with http.put(
        f"{url}/v1/functions/{name}/policy",
        headers=admin_headers(),
        data=orjson.dumps({"prewarm": "fixed", "keep_alive": "1s"}),
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"policy {name}: {r.status} {await r.text()}")


async def _rounds(
    admin: Admin, names: dict[str, list[str]], spares: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Per kind, the p50 of each round's cold starts (seconds); with `spares` (kind ->
    environment), each after its zygote's spare fork is back, as each waits for the generic
    pool to refill."""
    everyone = [n for group in names.values() for n in group]

    async def spare_ready(env_hash: str) -> bool:
        async with admin.http.get(
            f"{admin.url}/v1/environments/trusted", headers=admin_headers()
        ) as r:
            found: list[dict[str, object]] = (await r.json())["environments"]
        return any(e["hash"] == env_hash and e.get("spare") for e in found)

    async def scaled_to_zero() -> bool:
        counts = await admin.instances()
        return all(counts.get(x, 0) == 0 for x in everyone)

    async def pool_full() -> bool:
        return await admin.generic_ready() >= 4

    rounds: dict[str, list[float]] = {kind: [] for kind in names}
    for _ in range(ROUNDS):
        for kind in names:
            await until(scaled_to_zero, 60, "scale to zero")
            samples = []
            for name in names[kind]:
                await until(pool_full, 30, "the generic pool to refill")
                if spares is not None:
                    ready = functools.partial(spare_ready, spares[kind])
                    await until(ready, 30, "the zygote's spare")
                latency, _ = await admin.call(name)
                samples.append(latency)
            rounds[kind].append(statistics.median(samples))
    return rounds


async def _new_function(
    http: aiohttp.ClientSession, admin: Admin, url: str, kind: str, name: str
) -> float:
    """Deploy -> first answer of a new function of `kind` (seconds)."""
    requirements, source = KINDS[kind]
    started = time.perf_counter()
    await deploy(http, url, name, source + f"\nNAME = {name!r}\n", requirements)
    await admin.call(name)
    return time.perf_counter() - started


async def measure(
    work: Path, database_url: str, per_kind: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, float], dict[str, Path]]:
    gateway = Gateway.start(
        work / "state", database_url, FN_KEEP_ALIVE="1s", FN_GENERIC_POOL="4", FN_TEMPLATES="0"
    )
    results: dict[str, dict[str, list[float]]] = {}
    memory: dict[str, float] = {}
    sites: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as http:
            admin = Admin(http, gateway.url)
            names: dict[str, list[str]] = {}
            for kind, (requirements, source) in KINDS.items():
                names[kind] = [f"{kind}-{i}" for i in range(per_kind)]
                for i, name in enumerate(names[kind]):
                    data = await deploy(
                        http, gateway.url, name, source + f"\nV = {i}\n", requirements
                    )
                    hashes[kind] = str(data["environment"])
                    sites[kind] = work / "state" / "envs" / hashes[kind]
                    await _keep_alive_1s(http, gateway.url, name)
            for phase in ("untrusted", "trusted"):
                if phase == "trusted":
                    for env_hash in hashes.values():
                        async with http.put(
                            f"{gateway.url}/v1/environments/{env_hash}/trust",
                            headers=admin_headers(),
                            data=b"{}",
                        ) as r:
                            if r.status != 200:
                                raise RuntimeError(f"trust: {r.status} {await r.text()}")

                    async def zygotes_ready() -> bool:
                        async with http.get(
                            f"{gateway.url}/v1/environments/trusted", headers=admin_headers()
                        ) as r:
                            found: list[dict[str, object]] = (await r.json())["environments"]
                        return sum(e["state"] == "ready" for e in found) == len(hashes)

                    await until(zygotes_ready, 60, "the environments' zygotes")
                spares = hashes if phase == "trusted" else None
                for kind, p50s in (await _rounds(admin, names, spares)).items():
                    results[f"{phase} {kind}"] = {"cold": p50s}
                for kind in KINDS:
                    results[f"{phase} {kind}"]["new"] = [
                        await _new_function(
                            http, admin, gateway.url, kind, f"new-{phase}-{kind}-{i}"
                        )
                        for i in range(ROUNDS)
                    ]
                    await admin.call(names[kind][0])  # an idle instance, just called
                    memory[f"instance {phase} {kind}"] = await instance_pss(
                        http, gateway.url, names[kind][0]
                    )
            async with http.get(
                f"{gateway.url}/v1/environments/trusted", headers=admin_headers()
            ) as r:
                for e in (await r.json())["environments"]:
                    kind = next(k for k, h in hashes.items() if h == e["hash"])
                    memory[f"zygote {kind}"] = float(e["pss_bytes"])
    finally:
        gateway.stop()
    return results, memory, sites


def _row(name: str, samples: list[float], target: float | None = None) -> Row:
    spread = "/".join(f"{x * 1000:.1f}" for x in samples)
    p50 = statistics.median(samples) * 1000
    return Row(
        name,
        p50_ms=p50,
        ratio=f"rounds {spread}",
        target=f"p50<={target:g}ms" if target else "",
        met=(p50 <= target) if target else None,
    )


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    results, memory, sites = await measure(work, database_url, 3 if quick else 6)
    rows = []
    for kind in KINDS:
        fresh = [
            quantiles_ms(await asyncio.to_thread(fresh_interpreter_ms, sites[kind], kind, 5))[0]
            / 1000
            for _ in range(ROUNDS)
        ]
        imported = statistics.median(results[f"untrusted {kind}"]["cold"])
        forked = statistics.median(results[f"trusted {kind}"]["cold"])
        base = statistics.median(fresh)
        rows.append(_row(f"{kind}: fresh interpreter + import (baseline)", fresh))
        rows.append(
            _row(f"{kind}: cold, generic instance imports it", results[f"untrusted {kind}"]["cold"])
        )
        rows.append(
            _row(
                f"{kind}: cold, fork of its environment's zygote "
                f"({forked / imported:.2f}x import, {forked / base:.2f}x fresh)",
                results[f"trusted {kind}"]["cold"],
                TARGETS_MS.get(kind),
            )
        )
        rows.append(
            _row(f"{kind}: deploy -> first answer, untrusted", results[f"untrusted {kind}"]["new"])
        )
        rows.append(
            _row(f"{kind}: deploy -> first answer, trusted", results[f"trusted {kind}"]["new"])
        )
    for kind in KINDS:
        zygote_mb = memory[f"zygote {kind}"] / 2**20
        rows.append(Row(f"memory: environment zygote, {kind} (PSS MB)", p50_ms=zygote_mb))
        for phase, how in (("trusted", "forked from it"), ("untrusted", "that imported it")):
            rows.append(
                Row(
                    f"memory: idle instance {how}, {kind} (PSS MB)",
                    p50_ms=memory[f"instance {phase} {kind}"] / 2**20,
                )
            )
    return rows


if __name__ == "__main__":
    bench_main("bench.env_zygotes", run)
