"""`python -m bench.templates [--quick]`: cold starts of functions with heavy imports, from
their template (a fork, imported already) and by specialization (an import), side by side.

In one run, for a function that imports `requests` and one that imports `numpy` (each from its
requirements' environment), and a trivial one (the in-run baseline):

- a fresh interpreter that imports the library (the naive baseline);
- the first call after scale to zero on a gateway with `FN_TEMPLATES=0`: a prewarmed generic
  instance is specialized (it imports the module);
- the same on a gateway with templates (the default): the instance is a fork of the version's
  template (earned by a round of cold starts before the measured ones: a second cold start,
  or a slow first import, earns one);
- the PSS of a template, of an idle instance forked from it, and of an idle instance that
  imported the function itself.

Each cold-start row is the median of 3 rounds' p50s (a round: every function of the kind,
scaled to zero, called once). Prints a table and writes bench/results/templates.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from bench.deps import deploy
from bench.platform import Gateway, admin_headers, tree_pss
from bench.run import Admin, Row, bench_main, quantiles_ms, until

ROUNDS = 3
KINDS = {
    "plain": ("", "def handler(event, context):\n    return {'ok': True}\n"),
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


def fresh_interpreter_ms(site: Path | None, module: str, n: int) -> list[float]:
    """A new Python that imports `module` from the environment, n times (seconds)."""
    env = {**os.environ, "PYTHONPATH": str(site)} if site else dict(os.environ)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True)
        samples.append(time.perf_counter() - t0)
    return samples


def templates_in_log(log: Path) -> dict[str, int]:
    """PSS of each function's template, from the gateway's "template ready" log lines."""
    found = {}
    for line in log.read_bytes().splitlines():
        if b"template ready" not in line:
            continue
        with_fields = orjson.loads(line)
        function, _ = with_fields["key"]
        found[function] = int(with_fields["pss_bytes"])
    return found


async def instance_pss(http: aiohttp.ClientSession, url: str, name: str) -> int:
    async with http.get(f"{url}/v1/functions/{name}", headers=admin_headers()) as r:
        pids = (await r.json())["instances"]["pids"]
    return int(tree_pss(pids[0])["pss_bytes"]) if pids else 0


async def measure(
    work: Path, database_url: str, templates: bool, per_kind: int
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, Path]]:
    """Round p50s (seconds) per kind of function on one gateway, idle PSS (bytes), sites."""
    label = "templates" if templates else "no-templates"
    gateway = Gateway.start(
        work / label,
        database_url,
        FN_KEEP_ALIVE="1s",
        FN_GENERIC_POOL="4",
        FN_TEMPLATES="1" if templates else "0",
    )
    rounds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    memory: dict[str, float] = {}
    sites: dict[str, Path] = {}
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
                    if data.get("environment"):
                        sites[kind] = work / label / "envs" / str(data["environment"])
                    # A fixed 1 s keep-alive: the adaptive policy would learn to keep them.
                    async with http.put(
                        f"{gateway.url}/v1/functions/{name}/policy",
                        headers=admin_headers(),
                        data=orjson.dumps({"prewarm": "fixed", "keep_alive": "1s"}),
                    ) as r:
                        if r.status != 200:
                            raise RuntimeError(f"policy {name}: {r.status} {await r.text()}")
            everyone = [n for group in names.values() for n in group]

            async def scaled_to_zero() -> bool:
                counts = await admin.instances()
                return all(counts.get(x, 0) == 0 for x in everyone)

            async def pool_full() -> bool:
                return await admin.generic_ready() >= 4

            if templates:
                # A template is earned by a second cold start (or a slow first import, as
                # requests' and numpy's): one round of cold starts, not measured, earns them.
                await until(scaled_to_zero, 60, "scale to zero")
                for name in everyone:
                    await until(pool_full, 30, "the generic pool to refill")
                    await admin.call(name)

                async def all_templates() -> bool:
                    return len(templates_in_log(gateway.log)) == len(everyone)

                await until(all_templates, 120, "every function's template")
                for kind in KINDS:
                    pss = templates_in_log(gateway.log)
                    memory[f"template {kind}"] = statistics.median(pss[n] for n in names[kind])

            for _ in range(ROUNDS):
                for kind in KINDS:
                    await until(scaled_to_zero, 60, "scale to zero")
                    samples = []
                    for name in names[kind]:
                        await until(pool_full, 30, "the generic pool to refill")
                        latency, _ = await admin.call(name)
                        samples.append(latency)
                    rounds[kind].append(statistics.median(samples))
            for kind in KINDS:  # an idle instance of each kind, just called
                await admin.call(names[kind][0])
                memory[f"instance {kind}"] = await instance_pss(http, gateway.url, names[kind][0])
    finally:
        gateway.stop()
    return rounds, memory, sites


def _cold_row(name: str, p50s: list[float], target: str = "", met: bool | None = None) -> Row:
    spread = "/".join(f"{x * 1000:.1f}" for x in p50s)
    return Row(
        name,
        p50_ms=statistics.median(p50s) * 1000,
        ratio=f"rounds {spread}",
        target=target,
        met=met,
    )


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    per_kind = 3 if quick else 6
    with_templates, memory, sites = await measure(work, database_url, True, per_kind)
    without, memory_plain, _ = await measure(work, database_url, False, per_kind)
    rows = []
    targets = {"requests": 15.0, "numpy": None}
    for kind in KINDS:
        module = {"plain": "json", "requests": "requests", "numpy": "numpy"}[kind]
        fresh = [
            quantiles_ms(await asyncio.to_thread(fresh_interpreter_ms, sites.get(kind), module, 5))[
                0
            ]
            / 1000
            for _ in range(ROUNDS)
        ]
        base = statistics.median(fresh)
        rows.append(_cold_row(f"{kind}: fresh interpreter + import {module} (baseline)", fresh))
        specialized = statistics.median(without[kind])
        rows.append(
            _cold_row(
                f"{kind}: cold, generic instance imports it (FN_TEMPLATES=0)",
                without[kind],
            )
        )
        forked = statistics.median(with_templates[kind])
        target = targets.get(kind)
        rows.append(
            _cold_row(
                f"{kind}: cold, fork of its template "
                f"({forked / specialized:.2f}x import, {forked / base:.2f}x fresh)",
                with_templates[kind],
                target=f"p50<={target:g}ms" if target else "",
                met=(forked * 1000 <= target) if target else None,
            )
        )
    for kind in KINDS:
        rows.append(
            Row(f"memory: template, {kind} (PSS MB)", p50_ms=memory[f"template {kind}"] / 2**20)
        )
        rows.append(
            Row(
                f"memory: idle instance forked from it, {kind} (PSS MB)",
                p50_ms=memory[f"instance {kind}"] / 2**20,
            )
        )
        rows.append(
            Row(
                f"memory: idle instance that imported it, {kind} (PSS MB)",
                p50_ms=memory_plain[f"instance {kind}"] / 2**20,
            )
        )
    return rows


if __name__ == "__main__":
    bench_main("bench.templates", run)
