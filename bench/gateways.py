"""`python -m bench.gateways [--quick]`: gateway replicas that share warm instances.

See gateway/routing.py and docs/kubernetes.md, "Scaling gateways".

Two measurements, each against a baseline taken in the same run:

1. **A replayed trace slice** (bench/replay.py's slice of the Azure Functions 2019 sample,
   time-compressed; fixed 10-minute keep-alive) on 1, 2 and 3 gateways sharing one Postgres,
   each call sent to a gateway picked at random, as a Service spreads calls over replicas.
   Counted: cold starts (the instances that served calls: the handler names its instance) and
   idle instance-seconds (trace time, `ember_idle_instance_seconds` summed over the gateways,
   after everything scaled to zero); also the calls flagged cold (they waited for a start).
   The same with `FN_ROUTE_CALLS=0` (every gateway keeps its own instances, as before) shows
   what routing saves. Target: within 10 % of one gateway's.
2. **The hop**: warm calls (1 KB JSON, echo handler) sent to the function's home directly and
   through the other gateway, alternating, next to a bare aiohttp echo round trip (the floor:
   one loopback hop). Target: the sent call's p50 exceeds the direct one's by at most the floor's.
   Also the CPU each phase spends per call (the client, the floor, each gateway with its
   instances): on a 2-core VM a p50 moves with where each process is woken, the CPU less.

The trace is shared/traces/ beside the repository, or EMBER_TRACE_DIR; EMBER_BENCH_POLICY sets
the replay's policy (default fixed), EMBER_BENCH_ONLY=replay|hop runs one part,
EMBER_BENCH_SPEEDUP the replay's time compression (default 60), EMBER_BENCH_GATEWAYS its
configurations (`1,3,1`: routed, that many gateways each). Prints a table and writes
bench/results/gateways.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from bench.load import Load, sequential
from bench.platform import Gateway, Server, admin_headers
from bench.replay import TRACE, pick_slice
from bench.run import BODY_1KB, ECHO, Row, bench_main, latency_row, quantiles_ms, until
from scheduler.policy import FixedKeepAlive
from scheduler.simulator import FunctionTrace, load_azure_trace, simulate

# The handler names its instance: a call that waited for an instance start is flagged cold in
# its activation record, so a burst during one start flags several calls; the simulator counts
# one cold start. So the cold starts here are the instances that served a call flagged cold.
HANDLER = (
    "import os\n"
    "INSTANCE = os.urandom(8).hex()\n"
    "async def handler(event, context):\n"
    "    return INSTANCE\n"
)
POLICY = os.environ.get("EMBER_BENCH_POLICY", "fixed")
"""The warm-pool policy of the replay (fixed: what the simulator's prediction is for)."""
ONLY = os.environ.get("EMBER_BENCH_ONLY", "")
"""`replay` or `hop`: run one of the two measurements."""
SPEEDUP = float(os.environ.get("EMBER_BENCH_SPEEDUP") or 60)
"""How many times faster than the trace the replay runs: at 60x, 10 ms of real delay (a
loaded machine's scheduling) are 0.6 s of trace time, which moves a prewarm past its call;
`make bench-gateways-adaptive` replays at 20x."""
GATEWAYS = os.environ.get("EMBER_BENCH_GATEWAYS", "")
"""The replay's configurations, as gateway counts (`1,3,1`: one, three, one again, routed);
default: 1, 2, 3, 1 routed, then 2 and 3 not routed."""
KEEP_ALIVE_S = 600.0
SCALE_TO_ZERO_S = 3 * KEEP_ALIVE_S / SPEEDUP + 30
"""How long the replay waits for every instance to stop after its last call: adaptive keeps
an idle instance of a function it knows little of up to three keep-alives."""


@dataclass(slots=True, kw_only=True)
class Replayed:
    calls: int
    starts: int
    """Cold starts, as the simulator counts them: instances that served a call flagged cold
    (a prewarmed instance that serves its first call warm is not one)."""
    cold: int
    """Calls flagged cold in their activation records (they waited for an instance start)."""
    idle_s: float
    """Idle instance-seconds, trace time."""
    starts_of: dict[str, int]
    """Cold starts per function of the slice."""
    sent: dict[str, int]
    """Calls sent to another gateway, by outcome (served, fallback, lost)."""


def start_gateways(work: Path, database_url: str, n: int, tag: str, **env: str) -> list[Gateway]:
    return [
        Gateway.start(
            work / f"{tag}-{i}",
            database_url,
            EMBER_GATEWAY_ID=f"{tag}-{i}",
            FN_KEEP_ALIVE=f"{KEEP_ALIVE_S:g}s",
            FN_GENERIC_POOL="4",
            FN_TIME_SCALE=str(SPEEDUP),
            FN_MAX_INSTANCES_MEMORY="65536Gi",
            FN_MAX_INSTANCES_TOTAL="100000",
            FN_DELIVERIES="0",
            FN_ROUTE_REFRESH="0.2s",
            **env,
        )
        for i in range(n)
    ]


async def homes_seen(http: aiohttp.ClientSession, gateways: list[Gateway]) -> bool:
    """Every gateway sees all of them as homes (`ember_gateway_homes`)."""
    for g in gateways:
        async with http.get(f"{g.url}/metrics") as r:
            text = await r.text()
        line = next((x for x in text.splitlines() if x.startswith("ember_gateway_homes ")), "")
        if not line or float(line.split()[-1]) != len(gateways):
            return False
    return True


async def idle_instance_s(http: aiohttp.ClientSession, gateways: list[Gateway]) -> float:
    total = 0.0
    for g in gateways:
        async with http.get(f"{g.url}/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith("ember_idle_instance_seconds_total{"):
                    total += float(line.split()[-1])
    return total


async def sent_calls(http: aiohttp.ClientSession, gateways: list[Gateway]) -> dict[str, int]:
    """`ember_gateway_sent_calls_total` by outcome, summed over the gateways."""
    counts: dict[str, int] = {}
    for g in gateways:
        async with http.get(f"{g.url}/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith("ember_gateway_sent_calls_total{"):
                    outcome = line.split('"')[1]
                    counts[outcome] = counts.get(outcome, 0) + int(float(line.split()[-1]))
    return counts


async def instances(http: aiohttp.ClientSession, gateways: list[Gateway]) -> int:
    total = 0
    for g in gateways:
        async with http.get(f"{g.url}/v1/functions", headers=admin_headers()) as r:
            data = await r.json()
        total += sum(f["instances"]["total"] for f in data["functions"])
    return total


async def replay_on(
    work: Path, database_url: str, traces: list[FunctionTrace], n: int, routed: bool, tag: str
) -> Replayed:
    """Replay `traces` over `n` gateways."""
    gateways = start_gateways(work, database_url, n, tag, FN_ROUTE_CALLS="1" if routed else "0")
    names = {t.name: f"{tag}-{t.name}" for t in traces}
    try:
        async with aiohttp.ClientSession() as http:
            if routed:
                await until(
                    lambda: homes_seen(http, gateways), 30, "the gateways to see each other"
                )
            for t in traces:
                body = {
                    "name": names[t.name],
                    "source": HANDLER,
                    "concurrency": 1000,  # the simulator's model: one instance per function
                    "memory": f"{max(128, round(t.memory_mb))}Mi",
                }
                async with http.post(
                    f"{gateways[0].url}/v1/functions", headers=admin_headers(), json=body
                ) as r:
                    assert r.status == 201, await r.text()

            async def scaled_to_zero() -> bool:
                return await instances(http, gateways) == 0

            async with http.put(
                f"{gateways[0].url}/v1/policy", headers=admin_headers(), json={"prewarm": POLICY}
            ) as r:
                assert r.status == 200, await r.text()
            await until(scaled_to_zero, KEEP_ALIVE_S / SPEEDUP + 30, "scale to zero")
            idle_before = await idle_instance_s(http, gateways)
            pick = random.Random(n).choice
            loop = asyncio.get_running_loop()

            served: dict[str, str] = {}  # activation id -> the instance that served it

            async def call(name: str) -> None:
                async with http.post(f"{pick(gateways).url}/fn/{name}", json={}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"call to {name}: {r.status} {await r.text()}")
                    served[r.headers["X-Ember-Activation-Id"]] = await r.text()

            t0 = loop.time()
            tasks = []
            for at, name in sorted(
                (a / SPEEDUP, names[t.name]) for t in traces for a in t.arrivals
            ):
                delay = t0 + at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(call(name)))
            await asyncio.gather(*tasks)
            await until(scaled_to_zero, SCALE_TO_ZERO_S, "scale to zero")
            idle_s = await idle_instance_s(http, gateways) - idle_before
            for g in gateways:  # listing flushes that gateway's activation writer
                async with http.get(f"{g.url}/v1/functions", headers=admin_headers()) as r:
                    await r.read()
            sent = await sent_calls(http, gateways)
            calls = cold = 0
            starts_of: dict[str, int] = {}
            for trace_name, name in names.items():
                async with http.get(
                    f"{gateways[0].url}/v1/functions/{name}/activations?limit=1000",
                    headers=admin_headers(),
                ) as r:
                    activations = (await r.json())["activations"]
                calls += len(activations)
                cold += sum(a["cold"] for a in activations)
                # One start can flag several calls (those that waited for it): count instances.
                starts_of[trace_name] = len({served[a["id"]] for a in activations if a["cold"]})
            return Replayed(
                calls=calls,
                starts=sum(starts_of.values()),
                cold=cold,
                idle_s=idle_s,
                starts_of=starts_of,
                sent=sent,
            )
    finally:
        for g in gateways:
            await asyncio.to_thread(g.stop)


async def hop(work: Path, database_url: str, n: int) -> list[Row]:
    """Warm calls to the home directly and through the other gateway, with the floor."""
    floor = Server.start("bench.echo_server")
    gateways = start_gateways(work, database_url, 2, "hop")
    try:
        async with aiohttp.ClientSession() as http:
            await until(lambda: homes_seen(http, gateways), 30, "the gateways to see each other")
            async with http.post(
                f"{gateways[0].url}/v1/functions",
                headers=admin_headers(),
                json={"name": "hop", "source": ECHO},
            ) as r:
                assert r.status == 201, await r.text()
            async with http.post(f"{gateways[0].url}/fn/hop", json={}) as r:
                home_name = r.headers.get("X-Ember-Home")
        home, other = (gateways[1], gateways[0]) if home_name else (gateways[0], gateways[1])
        floor_url = f"http://127.0.0.1:{floor.port}/echo"
        samples: dict[str, list[float]] = {"floor": [], "direct": [], "sent": []}
        # CPU seconds per phase of: the bench's client, the floor, the home (its instances
        # included), the other gateway: wall-clock p50s on a 2-core VM move with where the
        # scheduler wakes each process, the CPU a hop spends does not.
        cpu: dict[str, list[float]] = {key: [0.0] * 4 for key in samples}
        procs = [floor.process.pid, home.process.pid, other.process.pid]
        rounds = 10  # alternate, so that the machine's load moves all three alike
        for _ in range(rounds):
            for key, url in (
                ("floor", floor_url),
                ("direct", f"{home.url}/fn/hop"),
                ("sent", f"{other.url}/fn/hop"),
            ):
                before = cpu_s(procs)
                samples[key] += await sequential(Load(url, BODY_1KB), n // rounds, warmup=20)
                cpu[key] = [
                    t + a - b for t, a, b in zip(cpu[key], cpu_s(procs), before, strict=True)
                ]
    finally:
        for g in gateways:
            await asyncio.to_thread(g.stop)
        floor.stop()
    floor_p50 = quantiles_ms(samples["floor"])[0]
    direct_p50 = quantiles_ms(samples["direct"])[0]
    sent_p50 = quantiles_ms(samples["sent"])[0]
    added = sent_p50 - direct_p50
    calls = n // rounds + 20  # (the warm-up calls ran too)
    floor_us = sum(cpu["floor"][:2]) / calls / rounds * 1e6
    hop_us = (sum(cpu["sent"]) - sum(cpu["direct"])) / calls / rounds * 1e6
    for key, spent in cpu.items():
        print(
            f"CPU us per call, {key}: "
            + ", ".join(
                f"{who} {s / calls / rounds * 1e6:.0f}"
                for who, s in zip(("client", "floor", "home", "other"), spent, strict=True)
            ),
            flush=True,
        )
    return [
        latency_row("floor: bare aiohttp echo, 1 KB (one hop)", samples["floor"], ratio="1.00x"),
        latency_row(
            "warm call at the function's home",
            samples["direct"],
            ratio=f"{direct_p50 / floor_p50:.2f}x",
        ),
        latency_row(
            "warm call through another gateway",
            samples["sent"],
            ratio=f"{sent_p50 / floor_p50:.2f}x",
        ),
        Row(
            "  p50 the hop adds, in floors",
            p50_ms=added,
            ratio=f"{added / floor_p50:.2f}x",
            target="<= 1.00x",
            met=added <= floor_p50,
        ),
        Row("CPU us per call: the floor's round trip (its server and the client)", floor_us),
        Row(
            "CPU us per call the hop adds (both gateways, the client; sent minus direct)",
            hop_us,
            ratio=f"{hop_us / floor_us:.2f}x",
        ),
    ]


def cpu_s(pids: list[int]) -> list[float]:
    """CPU seconds (user + system) so far of this process and of each of `pids` with its
    descendants (a gateway's instances, zygote and templates)."""
    spent = [time.process_time()]
    for pid in pids:
        total = 0.0
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # (exited meanwhile)
                times = p.cpu_times()
                total += times.user + times.system
        spent.append(total)
    return spent


CONFIGS = [
    ("1 gateway", 1, True),
    ("2 gateways, routed", 2, True),
    ("3 gateways, routed", 3, True),
    ("1 gateway, again (the run-to-run noise)", 1, True),
    ("2 gateways, NOT routed", 2, False),
    ("3 gateways, NOT routed", 3, False),
]


def configs() -> list[tuple[str, int, bool]]:
    if not GATEWAYS:
        return CONFIGS
    counts = [int(n) for n in GATEWAYS.split(",")]
    return [
        (f"{n} gateway{'s' if n > 1 else ''}{', again' if counts[:i].count(n) else ''}", n, True)
        for i, n in enumerate(counts)
    ]


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    minutes, functions = (15, 15) if quick else (30, 25)
    if ONLY == "hop":
        return await hop(work, database_url, 2000 if quick else 8000)
    trace = Path(os.environ.get("EMBER_TRACE_DIR") or TRACE)
    traces = pick_slice(load_azure_trace(trace), 600, minutes, functions, 400)
    predicted = simulate(traces, FixedKeepAlive(KEEP_ALIVE_S))
    print(
        f"slice: minutes 600-{600 + minutes} of the trace, {len(traces)} functions, "
        f"{predicted.calls} calls, x{SPEEDUP:g}; policy {POLICY}, keep-alive "
        f"{KEEP_ALIVE_S / 60:g} min; with a fixed keep-alive the simulator predicts "
        f"{predicted.cold} cold starts",
        flush=True,
    )
    rows: list[Row] = []
    results: list[tuple[str, int, bool, Replayed]] = []
    for i, (label, n, routed) in enumerate(configs()):
        result = await replay_on(work, database_url, traces, n, routed, f"c{i}")
        results.append((label, n, routed, result))
        print(
            f"{label}: {result.calls} calls, {result.starts} cold starts (instances), "
            f"{result.cold} calls flagged cold, "
            f"{result.idle_s:,.0f} idle instance-seconds; sent {result.sent}",
            flush=True,
        )
    base = results[0][3]
    for label, _, _, result in results[1:]:
        differ = {
            k: (base.starts_of[k], v) for k, v in result.starts_of.items() if v != base.starts_of[k]
        }
        print(f"  cold starts per function that differ, {label} vs 1 gateway: {differ}")
    for label, n, routed, result in results:
        cold_x = result.starts / max(base.starts, 1)
        idle_x = result.idle_s / max(base.idle_s, 1.0)
        judged = routed and n > 1
        rows.append(
            Row(
                f"replay: {label}: {result.calls} calls, {result.starts} cold starts "
                f"({result.cold} calls waited), {result.idle_s:,.0f} idle inst-s",
                ratio=f"{cold_x:.2f}x / {idle_x:.2f}x",
                target="<= 1.10x both" if judged else "",
                met=(cold_x <= 1.10 and idle_x <= 1.10) if judged else None,
            )
        )
    if ONLY != "replay":
        rows.extend(await hop(work, database_url, 2000 if quick else 8000))
    return rows


if __name__ == "__main__":
    bench_main("bench.gateways", run)
