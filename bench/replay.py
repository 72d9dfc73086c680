"""`python -m bench.replay`: replay a time-compressed slice of the trace against a running
platform, and compare its measured cold-start rate with the simulator's prediction.

This keeps the simulator honest: same slice, same policy, one run each. The platform runs with
`FN_TIME_SCALE` set to the compression, so its policies see the trace's own time: a 10-minute
keep-alive and the histogram's 1-minute bins compress with the calls. The functions are
deployed with a high per-instance concurrency, the simulator's model of one instance per
function.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import uvloop

from bench.platform import Gateway, admin_headers
from bench.run import until
from scheduler.policy import (
    FixedKeepAlive,
    HybridHistogram,
    adaptive_histogram,
    cost_histogram,
)
from scheduler.simulator import FunctionTrace, load_azure_trace, simulate
from store.embedded import start_embedded_postgres, with_database

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure-functions-2019-sample"
HANDLER = "async def handler(event, context):\n    return 'ok'\n"


def pick_slice(
    traces: list[FunctionTrace], start_min: int, minutes: int, functions: int, max_calls: int
) -> list[FunctionTrace]:
    """The functions with calls in the slice (at most `max_calls` each), times from its
    start."""
    lo, hi = start_min * 60.0, (start_min + minutes) * 60.0
    chosen: list[FunctionTrace] = []
    for t in traces:
        calls = [a - lo for a in t.arrivals if lo <= a < hi]
        if 2 <= len(calls) <= max_calls:
            chosen.append(
                FunctionTrace(
                    f"r{len(chosen)}", calls, 0.001, max(128.0, float(round(t.memory_mb)))
                )
            )
        if len(chosen) == functions:
            break
    return chosen


async def replay(
    gateway_url: str, traces: list[FunctionTrace], speedup: float
) -> dict[str, list[bool]]:
    """Call each function at its times compressed `speedup` times; returns the cold flag of
    every call."""
    async with aiohttp.ClientSession() as http:

        async def call(name: str) -> str:
            async with http.post(f"{gateway_url}/fn/{name}", json={}) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"call to {name}: {r.status} {body[:300]!r}")
                return r.headers["X-Ember-Activation-Id"]

        # Start at a whole minute of the policies' clock (the gateway's: CLOCK_MONOTONIC, the
        # same in every process, times the speedup), so that their minutes are the trace's:
        # timer prediction (scheduler.timers) works on the minutes of calls.
        t0 = time.monotonic() + 0.5
        t0 += (-(t0 * speedup) % 60.0) / speedup
        calls = sorted((a / speedup, t.name) for t in traces for a in t.arrivals)
        tasks = []
        for at, name in calls:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(name)))
        await asyncio.gather(*tasks)
        cold: dict[str, list[bool]] = {}
        for t in traces:
            async with http.get(
                f"{gateway_url}/v1/functions/{t.name}/activations?limit=1000",
                headers=admin_headers(),
            ) as r:
                cold[t.name] = [a["cold"] for a in (await r.json())["activations"]]
        return cold


async def main_async(args: argparse.Namespace) -> None:
    traces = pick_slice(
        load_azure_trace(args.trace),
        args.start_minute,
        args.minutes,
        args.functions,
        args.max_calls,
    )
    keep_alive_s = args.keep_alive_min * 60
    # What the live router runs for each: the histogram keeps the keep-alive while it learns.
    policy: FixedKeepAlive | HybridHistogram
    if args.policy == "fixed":
        policy = FixedKeepAlive(keep_alive_s)
    elif args.policy == "histogram":
        policy = HybridHistogram(warmup_keep_alive_s=keep_alive_s)
    else:  # the live router's cost modes, with the keep-alive while it learns
        policy = adaptive_histogram() if args.policy == "adaptive" else cost_histogram()
        policy.warmup_keep_alive_s = keep_alive_s
    predicted = simulate(traces, policy)
    with tempfile.TemporaryDirectory(prefix="ember-replay-") as tmp:
        server = os.environ.get("DATABASE_URL")
        embedded = None
        if not server:
            embedded = start_embedded_postgres(Path(tmp) / "pg")
            server = embedded.url
        name = f"ember_replay_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(server)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        gateway = Gateway.start(
            Path(tmp) / "gw",
            with_database(server, name),
            FN_KEEP_ALIVE=f"{keep_alive_s}s",
            FN_GENERIC_POOL="4",
            FN_TIME_SCALE=str(args.speedup),
            # The functions carry the trace's memory limits (to price idle memory) but use
            # little; the simulator has no node capacity, so neither may the replay.
            FN_MAX_INSTANCES_MEMORY="65536Gi",
            FN_MAX_INSTANCES_TOTAL="100000",
        )
        try:
            async with aiohttp.ClientSession() as http:
                for t in traces:
                    async with http.post(
                        f"{gateway.url}/v1/functions",
                        headers=admin_headers(),
                        data=orjson.dumps(
                            {
                                "name": t.name,
                                "source": HANDLER,
                                "concurrency": 1000,
                                # the memory the cost mode weighs, as simulated
                                "memory": f"{max(128, round(t.memory_mb))}Mi",
                            }
                        ),
                    ) as r:
                        assert r.status == 201, await r.text()
                async with http.put(
                    f"{gateway.url}/v1/policy",
                    headers=admin_headers(),
                    data=orjson.dumps({"prewarm": args.policy}),
                ) as r:
                    assert r.status == 200, await r.text()

                async def scaled_to_zero() -> bool:  # the deploys' warm instances
                    async with http.get(
                        f"{gateway.url}/v1/functions", headers=admin_headers()
                    ) as r:
                        data = await r.json()
                    return all(f["instances"]["total"] == 0 for f in data["functions"])

                await until(scaled_to_zero, keep_alive_s / args.speedup + 30, "scale to zero")
            started = time.perf_counter()
            cold = await replay(gateway.url, traces, args.speedup)
            elapsed = time.perf_counter() - started
        finally:
            gateway.stop()
            conn = await asyncpg.connect(server)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
            if embedded is not None:
                embedded.stop()
    measured_calls = sum(len(v) for v in cold.values())
    measured_cold = sum(sum(v) for v in cold.values())
    print(
        f"slice: minutes {args.start_minute}-{args.start_minute + args.minutes} of the trace, "
        f"{len(traces)} functions, {predicted.calls} calls, compressed {args.speedup:g}x "
        f"(replayed in {elapsed:.1f}s); policy {args.policy}, keep-alive "
        f"{args.keep_alive_min:g}m"
    )
    print(f"simulated: {predicted.cold} cold starts, {predicted.cold_rate:.2%}")
    print(
        f"measured:  {measured_cold} cold starts of {measured_calls} calls, "
        f"{measured_cold / max(measured_calls, 1):.2%}"
    )
    if args.by_function:
        print("function  calls  simulated  measured  (where they differ)")
        for t, f in zip(traces, predicted.functions, strict=True):
            if sum(cold[t.name]) != f.cold:
                print(f"{t.name:<8}{f.calls:>7}{f.cold:>11}{sum(cold[t.name]):>10}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--start-minute", type=int, default=600)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--functions", type=int, default=25)
    parser.add_argument(
        "--max-calls",
        type=int,
        default=400,
        help="skip functions with more calls than this in the slice",
    )
    parser.add_argument(
        "--speedup",
        type=float,
        default=60.0,
        help="time compression: 60 replays an hour in a minute",
    )
    parser.add_argument(
        "--keep-alive-min",
        type=float,
        default=10.0,
        help="the keep-alive (the histogram's while it learns)",
    )
    parser.add_argument(
        "--policy",
        choices=["fixed", "histogram", "histogram-cost", "adaptive"],
        default="adaptive",
        help="the default policy of the platform while replaying (default: adaptive, its default)",
    )
    parser.add_argument(
        "--by-function", action="store_true", help="also the functions whose counts differ"
    )
    uvloop.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
