"""The dashboard on 500 functions (`make bench-dashboard`): how long its pages take next to the
admin API's function list in the same run (the baseline: one query and JSON).

500 functions are stored directly (no instance is started for them) with 100 activation records
each in the last hour (50,000 rows, what the overview's summary query reads); then, through a
gateway process, sequential GETs, alternating between the measured pages and the baseline:

- `GET /v1/functions` (baseline): the functions as JSON;
- `GET /ui`: the overview (every function with its last hour's calls, errors, p50/p99, the pool,
  triggers, dead letters), signed in with the cookie;
- `GET /ui/functions/NAME`: one function's page (charts over the hour);
- `GET /v1/functions/NAME/stats`: the same data as JSON.

    python -m bench.dashboard [--quick]
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
from pathlib import Path

import aiohttp

from bench.platform import TOKEN, Gateway
from bench.run import Row, bench_main
from store import Activation, FunctionConfig, Store, new_id

FUNCTIONS = 500
CALLS_EACH = 100
SOURCE = "def handler(event, context):\n    return event\n"


async def _seed(database_url: str) -> None:
    store = await Store.connect(database_url)
    try:
        await store.migrate()
        now = dt.datetime.now(dt.UTC)
        rng = random.Random(19)
        for n in range(FUNCTIONS):
            name = f"fn-{n:03d}"
            await store.create_version(
                name, source=SOURCE, filename="handler.py", config=FunctionConfig()
            )
            await store.record_activations(
                [
                    Activation(
                        id=new_id(),
                        function=name,
                        version=1,
                        started_at=now - dt.timedelta(seconds=rng.uniform(0, 3500)),
                        duration_ms=rng.lognormvariate(0, 0.5),
                        cold=rng.random() < 0.05,
                        status="success" if rng.random() < 0.98 else "error",
                        http_status=200,
                    )
                    for _ in range(CALLS_EACH)
                ]
            )
    finally:
        await store.close()


async def _time(http: aiohttp.ClientSession, url: str, **kwargs: object) -> float:
    started = time.perf_counter()
    async with http.get(url, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        assert response.status == 200, (url, response.status)
    return (time.perf_counter() - started) * 1000


async def bench(quick: bool, database_url: str, work: Path) -> list[Row]:
    await _seed(database_url)
    gateway = Gateway.start(work / "gateway", database_url, FN_GENERIC_POOL="1")
    rounds = 10 if quick else 40
    samples: dict[str, list[float]] = {}
    try:
        admin = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(cookies={"ember_ui": TOKEN}) as http:
            targets = {
                "GET /v1/functions (baseline)": (f"{gateway.url}/v1/functions", admin),
                "GET /ui (500 functions)": (gateway.ui, {}),
                "GET /ui/functions/NAME": (f"{gateway.ui}/functions/fn-250", {}),
                "GET /v1/functions/NAME/stats": (
                    f"{gateway.url}/v1/functions/fn-250/stats",
                    admin,
                ),
            }
            for url, headers in targets.values():  # (warm up: caches, connections)
                await _time(http, url, headers=headers)
            for _ in range(rounds):
                for label, (url, headers) in targets.items():
                    samples.setdefault(label, []).append(await _time(http, url, headers=headers))
    finally:
        gateway.stop()
    base = statistics.median(samples["GET /v1/functions (baseline)"])
    rows = []
    for label, values in samples.items():
        values.sort()
        p50 = statistics.median(values)
        rows.append(
            Row(
                name=label,
                p50_ms=round(p50, 2),
                p99_ms=round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
                ratio=f"{p50 / base:.2f}x the function list",
            )
        )
    return rows


def main() -> None:
    bench_main("bench.dashboard", bench)


if __name__ == "__main__":
    main()
