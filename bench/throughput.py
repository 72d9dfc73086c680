"""`python -m bench.throughput [--quick] [--baseline DIR]`: the gateway under `wrk`, next to
the floor (a bare aiohttp echo server) in the same run.

Each round runs `wrk` (1 KB JSON body, POST) at 64 connections for throughput and at one
connection for the latency of a warm call, against the floor, this tree's gateway and, with
`--baseline DIR` (a checkout of another commit, e.g. `git worktree add --detach ../base main`),
that tree's gateway: the before and after of a change, measured in one sitting. Rounds rotate
the order; the table gives medians over the rounds (3, or `--rounds N`) and the ratio to the
floor of the same round. Writes `bench/results/throughput.json`.

`wrk` is the Debian package of that name (`make bench-throughput` installs it with apt when it
can); without it the benchmark says so and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import psutil
import uvloop

from bench.platform import Gateway, Server, admin_headers
from bench.run import BODY_1KB, ECHO, RESULTS, Row, print_table
from store.embedded import start_embedded_postgres, with_database

THROUGHPUT_CONNECTIONS = 64
ROUNDS = 3
PROXY_INSTANCES = 20  # as many as the gateway's echo gets at c=64 (FN_MAX_INSTANCES)
GATEWAY_ENV = {"FN_KEEP_ALIVE": "10m"}  # no scale to zero between rounds

# `done` prints one line the benchmark parses: wrk's own summary is rounded for people.
_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("EMBER-WRK %%d %%d %%d %%d %%.1f %%.1f %%.1f\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass(slots=True)
class WrkRun:
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    """Responses other than 2xx/3xx, and socket errors."""
    calls: int
    server_cpu_s: float = 0.0
    """CPU time (user + system) of the server's process during the run."""
    children_cpu_s: float = 0.0
    """CPU time of its descendants (a gateway's instances and zygote) during the run."""


def _cpu_s(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # exited meanwhile (an instance stopped)
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit(
            "bench.throughput needs wrk (the Debian package wrk): apt-get install wrk, "
            "or run make bench-throughput as root, which installs it"
        )
    return path


def run_wrk(
    script: Path, url: str, connections: int, duration_s: float, servers: Sequence[int] = ()
) -> WrkRun:
    """One wrk run; with `servers` (pids), the CPU time those processes and their descendants
    spent."""
    threads = 2 if connections > 1 else 1
    procs = []
    for pid in servers:
        root = psutil.Process(pid)
        procs += [root, *root.children(recursive=True)]
    before = _cpu_s(procs)
    out = subprocess.run(
        [
            wrk_path(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = _cpu_s(procs)
    spent = {pid: after[pid] - before[pid] for pid in after.keys() & before.keys()}
    for line in out.splitlines():
        if line.startswith("EMBER-WRK "):
            calls, duration_us, status, socket = (int(x) for x in line.split()[1:5])
            p50, p99, p999 = (float(x) / 1000 for x in line.split()[5:8])
            return WrkRun(
                calls / (duration_us / 1e6),
                p50,
                p99,
                p999,
                status + socket,
                calls,
                server_cpu_s=sum(s for pid, s in spent.items() if pid in servers),
                children_cpu_s=sum(s for pid, s in spent.items() if pid not in servers),
            )
    raise RuntimeError(f"no summary in wrk's output:\n{out}")


async def deploy_echo(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/v1/functions",
            headers=admin_headers(),
            data=orjson.dumps({"name": "echo", "source": ECHO}),
        ) as r:
            if r.status != 201:
                raise RuntimeError(f"deploy echo at {url}: {r.status} {await r.text()}")
        async with http.post(f"{url}/fn/echo", data=BODY_1KB) as r:
            if r.status != 200:
                raise RuntimeError(f"call echo at {url}: {r.status} {await r.text()}")


@dataclass(slots=True)
class Target:
    label: str
    url: str
    pids: list[int]
    gateway: bool = True
    """An Ember gateway (the targets apply), or a floor."""
    throughput: list[WrkRun] = field(default_factory=list)
    latency: list[WrkRun] = field(default_factory=list)


def measure(targets: list[Target], script: Path, duration_s: float, rounds: int) -> None:
    for target in targets:  # the warm pools grow to what 64 connections keep busy
        run_wrk(script, target.url, THROUGHPUT_CONNECTIONS, min(duration_s, 2))
    for r in range(rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for target in order:
            run = run_wrk(script, target.url, THROUGHPUT_CONNECTIONS, duration_s, target.pids)
            target.throughput.append(run)
            print(
                f"round {r + 1} c=64 {target.label}: {run.calls_per_s:,.0f}/s, CPU per call: "
                f"server {run.server_cpu_s / run.calls * 1e6:.0f} us, "
                f"its children {run.children_cpu_s / run.calls * 1e6:.0f} us",
                flush=True,
            )
        for target in order:
            run = run_wrk(script, target.url, 1, duration_s)
            target.latency.append(run)
            print(
                f"round {r + 1} c=1 {target.label}: p50 {run.p50_ms:.3f} ms, "
                f"p99 {run.p99_ms:.3f} ms, p99.9 {run.p999_ms:.3f} ms",
                flush=True,
            )


def _median(runs: list[WrkRun], field: Callable[[WrkRun], float]) -> float:
    return statistics.median(field(run) for run in runs)


def _cpu_us_per_call(runs: list[WrkRun], children: bool = False) -> float:
    return statistics.median(
        (r.children_cpu_s if children else r.server_cpu_s) / max(r.calls, 1) * 1e6 for r in runs
    )


def rows_for(floor: Target, gateways: list[Target]) -> list[Row]:
    floor_cpu_us = _cpu_us_per_call(floor.throughput)
    rows = [
        Row(
            f"floor c=64, 1 KB ({floor.label})",
            _median(floor.throughput, lambda r: r.p50_ms),
            _median(floor.throughput, lambda r: r.p99_ms),
            _median(floor.throughput, lambda r: r.p999_ms),
            _median(floor.throughput, lambda r: r.calls_per_s),
            ratio="1.00x",
        ),
        Row(
            "floor c=1, 1 KB",
            _median(floor.latency, lambda r: r.p50_ms),
            _median(floor.latency, lambda r: r.p99_ms),
            _median(floor.latency, lambda r: r.p999_ms),
            _median(floor.latency, lambda r: r.calls_per_s),
            ratio="1.00x",
        ),
    ]
    for g in gateways:
        # Ratios per round (both sides measured within seconds of each other), then the median.
        ratio = statistics.median(
            a.calls_per_s / b.calls_per_s
            for a, b in zip(g.throughput, floor.throughput, strict=True)
        )
        errors = sum(r.errors for r in g.throughput + g.latency)
        note = f" [{errors} errors]" if errors else ""
        rows.append(
            Row(
                f"{g.label} c=64, 1 KB{note}",
                _median(g.throughput, lambda r: r.p50_ms),
                _median(g.throughput, lambda r: r.p99_ms),
                _median(g.throughput, lambda r: r.p999_ms),
                _median(g.throughput, lambda r: r.calls_per_s),
                ratio=f"{ratio:.2f}x of floor",
                target=">=0.4x floor" if g.gateway else "",
                met=(ratio >= 0.4 and not errors) if g.gateway else None,
            )
        )
        p50_ratio = statistics.median(
            a.p50_ms / b.p50_ms for a, b in zip(g.latency, floor.latency, strict=True)
        )
        p99 = _median(g.latency, lambda r: r.p99_ms)
        rows.append(
            Row(
                f"{g.label} c=1 (warm call), 1 KB",
                _median(g.latency, lambda r: r.p50_ms),
                p99,
                _median(g.latency, lambda r: r.p999_ms),
                _median(g.latency, lambda r: r.calls_per_s),
                ratio=f"{p50_ratio:.2f}x of floor p50",
                target="p50<=1.5x p99<=3ms" if g.gateway else "",
                met=(p50_ratio <= 1.5 and p99 <= 3) if g.gateway else None,
            )
        )
    # CPU time per call at c=64 (us, in the p50 column): less sensitive to the machine's other
    # load than calls/s, and it says which process the time goes to.
    rows.append(Row("CPU us/call c=64: floor server", p50_ms=floor_cpu_us, ratio="1.00x"))
    for g in gateways:
        gateway_us = _cpu_us_per_call(g.throughput)
        rows.append(
            Row(
                f"CPU us/call c=64: {g.label}, its own process",
                p50_ms=gateway_us,
                ratio=f"{gateway_us / floor_cpu_us:.2f}x of floor",
            )
        )
        rows.append(
            Row(
                f"CPU us/call c=64: {g.label}, its children (instances, zygote)",
                p50_ms=_cpu_us_per_call(g.throughput, children=True),
            )
        )
    return rows


CALLPATH = Path(__file__).with_name("callpath.py")
INVOKERPATH = Path(__file__).with_name("invokerpath.py")


def _alone(script: Path, tree: Path | None) -> dict[str, float]:
    """One run of `script` (a bench of one part alone, printing a JSON line) with `tree`'s
    code (this tree's copy of the script: an older checkout may not have it)."""
    root = tree or CALLPATH.parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-P", str(script)], capture_output=True, check=True, cwd=root, env=env
    ).stdout
    result: dict[str, float] = orjson.loads(out.splitlines()[-1])
    return result


def callpath_rows(trees: list[tuple[str, Path | None]], rounds: int) -> list[Row]:
    """`bench/callpath.py` (Ember's call path alone, CPU per call) and `bench/invokerpath.py`
    (an invoker instance alone, CPU per warm call) for each tree, alternating, medians of
    `rounds`."""
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for _ in range(rounds):
        for label, tree in trees:
            results[label].append(_alone(CALLPATH, tree) | _alone(INVOKERPATH, tree))
    rows = []
    first = None
    for label, runs in results.items():
        sequential = statistics.median(r["sequential_us"] for r in runs)
        concurrent = statistics.median(r["concurrent_us"] for r in runs)
        first = first or concurrent
        rows.append(
            Row(
                f"CPU us/call, the call path alone (no sockets): {label}, one at a time / "
                "64 at a time",
                p50_ms=sequential,
                p99_ms=concurrent,
                ratio="" if first == concurrent else f"this tree: {first / concurrent:.2f}x of it",
            )
        )
    first = None
    for label, runs in results.items():
        instance = statistics.median(r["instance_us"] for r in runs)
        first = first or instance
        rows.append(
            Row(
                f"CPU us/call, an invoker instance alone (one at a time, no sandbox): {label}",
                p50_ms=instance,
                ratio="" if first == instance else f"this tree: {first / instance:.2f}x of it",
            )
        )
    return rows


async def _create_databases(server_url: str, count: int) -> list[str]:
    names = [f"ember_bench_{uuid.uuid4().hex[:8]}" for _ in range(count)]
    conn = await asyncpg.connect(server_url)
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return names


async def _drop_databases(server_url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def start_gateways(
    tree: Path | None, state_dir: Path, database_url: str, processes: int
) -> list[Gateway]:
    """One gateway, or `processes` of them sharing its port with SO_REUSEPORT (each its own
    state dir, pool and gateway id, one database: replicas on one machine)."""
    if processes == 1:
        return [Gateway.start_in(tree, state_dir, database_url, GATEWAY_ENV)]
    env = {**GATEWAY_ENV, "FN_REUSE_PORT": "1"}
    first = Gateway.start_in(tree, state_dir / "0", database_url, env | {"EMBER_GATEWAY_ID": "p0"})
    started = [first]
    try:
        port = first.url.rpartition(":")[2]
        for i in range(1, processes):
            more = env | {"FN_PORT": port, "EMBER_GATEWAY_ID": f"p{i}"}
            started.append(Gateway.start_in(tree, state_dir / str(i), database_url, more))
    except BaseException:
        for gateway in started:
            gateway.stop()
        raise
    return started


async def run(
    quick: bool,
    baseline: Path | None,
    processes: int,
    two_hop: bool,
    work: Path,
    rounds: int = ROUNDS,
) -> list[Row]:
    duration_s = 2.0 if quick else 5.0
    script = work / "post-1kb.lua"
    script.write_text(_SCRIPT % BODY_1KB.decode())
    embedded = None
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        embedded = await asyncio.to_thread(start_embedded_postgres, work / "pg")
        server_url = embedded.url
    trees: list[tuple[str, Path | None, int]] = [("gateway (this tree)", None, 1)]
    if baseline is not None:
        trees.append((f"gateway (baseline {baseline.name})", baseline, 1))
    if processes > 1:
        trees.append((f"gateway (this tree, {processes} processes)", None, processes))
    databases = await _create_databases(server_url, len(trees))
    floor = Server.start("bench.echo_server")
    started: list[Gateway] = []
    proxy = None
    try:
        targets = [
            Target("bare aiohttp echo", f"http://127.0.0.1:{floor.port}/echo", [floor.process.pid])
        ]
        if two_hop:
            proxy = Server.start("bench.proxy_floor", str(PROXY_INSTANCES))
            targets.append(
                Target(
                    f"two-hop floor (bare proxy, {PROXY_INSTANCES} invokers, no sandbox)",
                    f"http://127.0.0.1:{proxy.port}/fn/echo",
                    [proxy.process.pid],
                    gateway=False,
                )
            )
        for i, ((label, tree, n), database) in enumerate(zip(trees, databases, strict=True)):
            gateways = await start_gateways(
                tree, work / f"state-{i}", with_database(server_url, database), n
            )
            started += gateways
            await deploy_echo(gateways[0].url)
            pids = [g.process.pid for g in gateways]
            targets.append(Target(label, f"{gateways[0].url}/fn/echo", pids))
        await asyncio.to_thread(measure, targets, script, duration_s, rounds)
    finally:
        for gateway in started:
            gateway.stop()
        if proxy is not None:
            proxy.stop()
        floor.stop()
        await _drop_databases(server_url, databases)
        if embedded is not None:
            embedded.stop()
    rows = rows_for(targets[0], targets[1:])
    paths = [(label, tree) for label, tree, n in trees if n == 1]
    return rows + await asyncio.to_thread(callpath_rows, paths, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--quick", action="store_true", help="2 s per wrk run instead of 5 s")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of Ember whose gateway is measured in the same run (the before)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also measure this many gateway processes of this tree sharing the port "
        "(FN_REUSE_PORT), each with its own pool",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"rounds of every measurement (default {ROUNDS}); more give steadier medians and "
        "before/after ratios on a shared machine",
    )
    parser.add_argument(
        "--no-two-hop",
        action="store_true",
        help="leave out the two-hop floor (bench/proxy_floor.py)",
    )
    args = parser.parse_args()
    wrk_path()
    if args.baseline is not None and not (args.baseline / "gateway" / "server.py").exists():
        sys.exit(f"--baseline {args.baseline}: not a checkout of Ember (no gateway/server.py)")
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as tmp:
        rows = uvloop.run(
            run(
                args.quick,
                args.baseline,
                args.processes,
                not args.no_two_hop,
                Path(tmp),
                args.rounds,
            )
        )
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "rounds": args.rounds,
        "baseline": str(args.baseline) if args.baseline else None,
        "processes": args.processes,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rows": [asdict(r) for r in rows],
    }
    (RESULTS / "throughput.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"wrote {RESULTS / 'throughput.json'}")


if __name__ == "__main__":
    main()
