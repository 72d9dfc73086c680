"""What tenancy costs a warm call (`make bench-auth`): the same echo function deployed public,
private (`--auth key`, called with an invoker key) and with CORS (`--cors-origin`, called from
that origin), in a namespace (`/fn/team-a/echo`), measured in alternating rounds on one gateway,
next to the bare aiohttp floor. Ratios are to the public function of the same rounds, so a noisy
machine moves every row together.

    python -m bench.auth [--quick]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import aiohttp
import orjson

from bench.load import Load, sequential
from bench.platform import Gateway, Server, admin_headers
from bench.run import BODY_1KB, ECHO, Row, bench_main, latency_row, quantiles_ms

ORIGIN = "https://app.example.com"


async def calls(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int, warmup: int = 50
) -> list[float]:
    """Latency in seconds of `n` sequential calls with `headers`, on one keep-alive connection."""
    headers = {"Content-Type": "application/json", **headers}
    out = []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        async with http.post(url, data=BODY_1KB, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


async def admin(
    http: aiohttp.ClientSession, url: str, path: str, body: object, namespace: str = "default"
) -> dict[str, object]:
    headers = {**admin_headers(), "X-Ember-Namespace": namespace}
    async with http.post(f"{url}{path}", headers=headers, data=orjson.dumps(body)) as r:
        data: dict[str, object] = await r.json()
        if r.status != 201:
            raise RuntimeError(f"POST {path}: {r.status} {data}")
        return data


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    rounds, per_round = (4, 500) if quick else (10, 1000)
    floor = Server.start("bench.echo_server")
    gateway = Gateway.start(work / "gw", database_url, FN_GENERIC_POOL="2")
    try:
        floor_lat = await sequential(
            Load(f"http://127.0.0.1:{floor.port}/echo", BODY_1KB), per_round * 2
        )
        floor_p50 = quantiles_ms(floor_lat)[0]
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as http:
            url = gateway.url
            await admin(http, url, "/v1/functions", {"name": "public", "source": ECHO})
            await admin(
                http, url, "/v1/functions", {"name": "private", "source": ECHO, "auth": "key"}
            )
            await admin(
                http,
                url,
                "/v1/functions",
                {"name": "cors", "source": ECHO, "cors_origins": [ORIGIN]},
            )
            await admin(http, url, "/v1/functions", {"name": "echo", "source": ECHO}, "team-a")
            key = await admin(http, url, "/v1/keys", {"namespace": "default", "role": "invoker"})
            cases = {
                "public function (as before)": (f"{url}/fn/public", {}),
                "private function, invoker key": (
                    f"{url}/fn/private",
                    {"Authorization": f"Bearer {key['key']}"},
                ),
                "CORS function, from its origin": (f"{url}/fn/cors", {"Origin": ORIGIN}),
                "public function of namespace team-a": (f"{url}/fn/team-a/echo", {}),
            }
            samples: dict[str, list[float]] = {name: [] for name in cases}
            medians: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(rounds):  # alternating: drift on a shared machine hits every case
                for name, (target, headers) in cases.items():
                    lat = await calls(http, target, headers, per_round)
                    samples[name] += lat
                    medians[name].append(statistics.median(lat))
    finally:
        gateway.stop()
        floor.stop()
    public = statistics.median(medians["public function (as before)"])
    rows = [latency_row("floor: bare aiohttp echo, 1 KB", floor_lat, ratio="floor")]
    for name in cases:
        ratio = statistics.median(medians[name]) / public
        to_floor = quantiles_ms(samples[name])[0] / floor_p50
        rows.append(
            latency_row(
                f"warm: {name}",
                samples[name],
                ratio=f"{ratio:.2f}x public, {to_floor:.2f}x floor",
                target="<=1.05x public" if name != "public function (as before)" else "",
                met=ratio <= 1.05 if name != "public function (as before)" else None,
            )
        )
    return rows


if __name__ == "__main__":
    bench_main("bench.auth", run)
