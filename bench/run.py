"""`python -m bench.run [--quick]`: every benchmark in one run, side by side with the floor.

Prints one table (p50, p99, p99.9, calls/s, ratio to the floor, target) and writes
`bench/results/latest.json`. Ratios compare measurements taken in the same run, so a noisy
shared machine moves both sides together.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform as pyplatform
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import uvloop

from bench.load import Load, sequential, sequential_direct, throughput
from bench.platform import Gateway, Server, admin_headers, specialize, tree_pss
from store.embedded import start_embedded_postgres, with_database

ECHO = "def handler(event, context):\n    return event\n"
PID = "import os\n\ndef handler(event, context):\n    return os.getpid()\n"
BODY_1KB = orjson.dumps({"data": "x" * 1000})
RESULTS = Path(__file__).parent / "results"


@dataclass
class Row:
    name: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    calls_per_s: float | None = None
    ratio: str = ""
    target: str = ""
    met: bool | None = None


def quantiles_ms(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return q(0.5), q(0.99), q(0.999)


def latency_row(name: str, samples: list[float], **fields: Any) -> Row:
    p50, p99, p999 = quantiles_ms(samples)
    return Row(name, p50, p99, p999, **fields)


class Admin:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def deploy(self, name: str, source: str) -> None:
        async with self.http.post(
            f"{self.url}/v1/functions",
            headers=admin_headers(),
            data=orjson.dumps({"name": name, "source": source}),
        ) as r:
            if r.status != 201:
                raise RuntimeError(f"deploy {name}: {r.status} {await r.text()}")

    async def instances(self) -> dict[str, int]:
        async with self.http.get(f"{self.url}/v1/functions", headers=admin_headers()) as r:
            data = await r.json()
        return {f["name"]: f["instances"]["total"] for f in data["functions"]}

    async def generic_ready(self) -> int:
        async with self.http.get(f"{self.url}/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith('ember_instances{state="generic"}'):
                    return int(float(line.split()[-1]))
        return 0

    async def call(self, name: str, body: bytes = b"{}") -> tuple[float, Any]:
        t0 = time.perf_counter()
        async with self.http.post(
            f"{self.url}/fn/{name}", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            data = await r.read()
            if r.status != 200:
                raise RuntimeError(f"call {name}: {r.status} {data[:200]!r}")
        return time.perf_counter() - t0, orjson.loads(data)


async def until(predicate: Any, timeout_s: float, what: str) -> None:
    """Wait for a condition the platform reaches on its own (scale to zero, pool refill)."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def cold_starts(admin: Admin, names: list[str], pool_size: int) -> list[float]:
    """First call of each function on a gateway where it has no instance."""
    samples = []
    for name in names:
        if pool_size:

            async def full() -> bool:
                return await admin.generic_ready() >= pool_size

            await until(full, 30, "the generic pool to refill")
        latency, _ = await admin.call(name)
        samples.append(latency)
    return samples


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    n_seq = 1000 if quick else 5000
    n_cold = 10 if quick else 40
    duration_s = 2.0 if quick else 5.0
    rows: list[Row] = []

    floor = Server.start("bench.echo_server")
    invoker = Server.start("invoker")
    gateways: list[Gateway] = []
    try:
        floor_url = f"http://127.0.0.1:{floor.port}/echo"
        floor_lat = await sequential(Load(floor_url, BODY_1KB), n_seq)
        floor_p50 = quantiles_ms(floor_lat)[0]
        rows.append(latency_row("floor: bare aiohttp echo, 1 KB", floor_lat, ratio="1.00x"))

        await specialize(invoker.port, ECHO)
        direct = await sequential_direct("127.0.0.1", invoker.port, BODY_1KB, n_seq)
        rows.append(
            latency_row(
                "direct: client -> warm invoker, 1 KB",
                direct,
                ratio=f"{quantiles_ms(direct)[0] / floor_p50:.2f}x",
            )
        )

        main = Gateway.start(work / "main", database_url, FN_KEEP_ALIVE="1s", FN_GENERIC_POOL="4")
        gateways.append(main)
        async with aiohttp.ClientSession() as http:
            admin = Admin(http, main.url)
            if policy := os.environ.get("EMBER_BENCH_POLICY"):  # (--policy)
                async with http.put(
                    f"{main.url}/v1/policy", headers=admin_headers(), data=policy.encode()
                ) as r:
                    if r.status != 200:
                        raise RuntimeError(f"default policy: {r.status} {await r.text()}")
            await admin.deploy("echo", ECHO)

            warm = await sequential(Load(f"{main.url}/fn/echo", BODY_1KB), n_seq)
            p50, p99, _ = quantiles_ms(warm)
            ratio = p50 / floor_p50
            rows.append(
                latency_row(
                    "warm: client -> gateway -> instance, 1 KB",
                    warm,
                    ratio=f"{ratio:.2f}x",
                    target="p50<=1ms p99<=3ms <=2.5x",
                    met=p50 <= 1 and p99 <= 3 and ratio <= 2.5,
                )
            )

            names = [f"cold-{i}" for i in range(n_cold)]
            deploys = []
            for i, name in enumerate(names):
                t0 = time.perf_counter()
                await admin.deploy(name, ECHO + f"\nVARIANT = {i}\n")
                await admin.call(name)
                deploys.append(time.perf_counter() - t0)
            rows.append(
                latency_row(
                    "deploy -> first successful call",
                    deploys,
                    target="<=500ms",
                    met=quantiles_ms(deploys)[0] <= 500,
                )
            )

            async def scaled_to_zero() -> bool:
                counts = await admin.instances()
                return all(counts.get(n, 0) == 0 for n in names)

            await until(scaled_to_zero, 60, "scale to zero")
            cold = await cold_starts(admin, names, pool_size=4)
            p50, p99, _ = quantiles_ms(cold)
            rows.append(
                latency_row(
                    "cold after scale to zero (generic pool)",
                    cold,
                    target="p50<=10ms p99<=30ms",
                    met=p50 <= 10 and p99 <= 30,
                )
            )

            # Instance memory: an idle warm instance, and the platform's process tree.
            await admin.deploy("whoami", PID)
            # Kept warm whatever this gateway's short keep-alive (set for the cold rows) says.
            async with http.put(
                f"{main.url}/v1/functions/whoami/policy",
                headers=admin_headers(),
                data=orjson.dumps({"keep_alive": "10m"}),
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"policy whoami: {r.status} {await r.text()}")
            await admin.call("whoami")  # once it has replied, the instance is idle
            async with http.get(f"{main.url}/v1/functions/whoami", headers=admin_headers()) as r:
                [pid] = (await r.json())["instances"]["pids"]
            # The instance is a process tree (supervisor, namespace init, invoker): all of it.
            instance_pss = tree_pss(pid)["pss_bytes"] / (1 << 20)
            platform_mem = tree_pss(main.process.pid)
            # What the processes are (the rest: the gateway, the zygote, namespaces' inits,
            # templates and their spare forks).
            alive = sum((await admin.instances()).values())
            generic = await admin.generic_ready()
            rows.append(
                Row(
                    "memory: idle warm instance PSS (MB)",
                    p50_ms=instance_pss,
                    target="<=12MB",
                    met=instance_pss <= 12,
                )
            )
            rows.append(
                Row(
                    f"memory: gateway, zygote, instances ({platform_mem['processes']} "
                    f"processes; {alive} specialized, {generic} generic instances) PSS (MB)",
                    p50_ms=platform_mem["pss_bytes"] / (1 << 20),
                )
            )

            for label, env in (
                ("cold, no generic pool (zygote fork + import)", {"FN_GENERIC_POOL": "0"}),
                (
                    "cold, no pool, no zygote (new interpreter)",
                    {"FN_GENERIC_POOL": "0", "FN_ZYGOTE": "0"},
                ),
            ):
                other = Gateway.start(
                    work / label.split()[3].strip(",()"), database_url, FN_KEEP_ALIVE="10m", **env
                )
                gateways.append(other)
                samples = await cold_starts(Admin(http, other.url), names, pool_size=0)
                rows.append(latency_row(label, samples))
                other.stop()
                gateways.remove(other)

        for concurrency in (1, 16, 64):
            f_rate, _, _ = throughput(Load(floor_url, BODY_1KB), concurrency, duration_s)
            g_rate, errors, lat = throughput(
                Load(f"{main.url}/fn/echo", BODY_1KB), concurrency, duration_s
            )
            target = ">=6000/s" if concurrency == 64 else ""
            rows.append(
                latency_row(
                    f"throughput c={concurrency}, 1 KB (floor {f_rate:,.0f}/s)",
                    lat,
                    calls_per_s=g_rate,
                    ratio=f"{g_rate / f_rate:.2f}x of floor",
                    target=target,
                    met=(g_rate >= 6000) if target else None,
                )
            )
            if errors:
                rows[-1].name += f" [{errors} errors]"
        for size_kb in (64, 1024):
            body = b"x" * (size_kb * 1024)
            f_rate, _, _ = throughput(
                Load(floor_url, body, "application/octet-stream"), 16, duration_s
            )
            g_rate, errors, lat = throughput(
                Load(f"{main.url}/fn/echo", body, "application/octet-stream"), 16, duration_s
            )
            rows.append(
                latency_row(
                    f"throughput c=16, {size_kb} KB (floor {f_rate:,.0f}/s)",
                    lat,
                    calls_per_s=g_rate,
                    ratio=f"{g_rate / f_rate:.2f}x of floor",
                )
            )
    finally:
        for gateway in gateways:
            gateway.stop()
        floor.stop()
        invoker.stop()
    return rows


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Ember benchmark (latency in ms; memory rows: MB in the p50 column)")
    for column in ("benchmark", "p50", "p99", "p99.9", "calls/s", "ratio", "target", "met"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")

    def fmt(x: float | None, digits: int = 3) -> str:
        return "" if x is None else f"{x:,.{digits}f}"

    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        table.add_row(
            r.name,
            fmt(r.p50_ms),
            fmt(r.p99_ms),
            fmt(r.p999_ms),
            fmt(r.calls_per_s, 0),
            r.ratio,
            r.target,
            met,
        )
    Console(width=160).print(table)


Bench = Callable[[bool, str, Path], Awaitable[list[Row]]]


async def in_fresh_database(bench: Bench, quick: bool) -> list[Row]:
    """Run `bench(quick, database_url, work_dir)` on a new database of DATABASE_URL's server,
    or of an embedded Postgres, dropped afterwards."""
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as tmp:
        work = Path(tmp)
        embedded = None
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            embedded = start_embedded_postgres(work / "pg")
            server_url = embedded.url
        name = f"ember_bench_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(server_url)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        try:
            return await bench(quick, with_database(server_url, name), work)
        finally:
            conn = await asyncpg.connect(server_url)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
            if embedded is not None:
                embedded.stop()


def bench_main(module: str, bench: Bench) -> None:
    """The command line of a benchmark module: `python -m bench.NAME [--quick]`; prints the
    table and writes bench/results/NAME.json."""
    name = module.rpartition(".")[2]
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("--quick", action="store_true", help="fewer samples: under a minute")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    rows = uvloop.run(in_fresh_database(bench, args.quick))
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "rows": [asdict(r) for r in rows],
    }
    (RESULTS / f"{name}.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"wrote {RESULTS / f'{name}.json'}")


async def main_async(quick: bool) -> list[Row]:
    return await in_fresh_database(run, quick)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="fewer samples: under a minute")
    parser.add_argument(
        "--isolation",
        choices=("auto", "strict", "off"),
        default="auto",
        help="the gateways' FN_ISOLATION: off measures the path without sandboxes, to price them",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FN_X=VALUE",
        help="a setting for the gateways (e.g. --set FN_TEMPLATES=0), repeatable",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        help="run the gateways of another checkout of Ember (git worktree add --detach DIR REV)",
    )
    parser.add_argument(
        "--policy",
        metavar="JSON",
        help='the main gateway\'s default warm-pool policy, e.g. \'{"prewarm": "fixed"}\'',
    )
    args = parser.parse_args()
    os.environ["EMBER_BENCH_ISOLATION"] = args.isolation
    if args.policy:
        os.environ["EMBER_BENCH_POLICY"] = args.policy
    if any("=" not in s or not s.startswith("FN_") for s in args.set):
        parser.error("--set takes FN_NAME=VALUE")
    os.environ["EMBER_BENCH_SET"] = ",".join(args.set)
    if args.checkout is not None:
        os.environ["EMBER_BENCH_CHECKOUT"] = str(args.checkout.resolve())
    started = dt.datetime.now(dt.UTC)
    rows = uvloop.run(main_async(args.quick))
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "isolation": args.isolation,
        "settings": args.set,
        "policy": args.policy,
        "checkout": str(args.checkout) if args.checkout else None,
        "machine": {
            "cpus": os.cpu_count(),
            "python": pyplatform.python_version(),
            "system": pyplatform.platform(),
        },
        "rows": [asdict(r) for r in rows],
    }
    (RESULTS / "latest.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"wrote {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
