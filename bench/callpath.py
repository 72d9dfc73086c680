"""`python -P bench/callpath.py`: the CPU time of Ember's own call path per call, without
sockets, processes or HTTP: `calls.execute.execute` on the live scheduler over in-memory
instances (`scheduler.testing.FakeBackend`) that answer on the next turn of the loop, with the
real activation writer (its spool appended per call; the store is not written) and metrics.

It prints one JSON line: microseconds of CPU per call, calls one after another and 64 at a time
on 20 instances (most calls queue for a slot, as under wrk at c=64). Process CPU time of a
single-threaded loop moves far less with a shared machine's load than calls/s over sockets, so
this row can tell a change of a few microseconds in the call path. `bench.throughput` runs it
for this tree and, with `--baseline DIR`, for that checkout (`-P` and `PYTHONPATH=DIR` make the
imports come from there).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop

from calls.activations import ActivationWriter, new_activation_id
from calls.execute import CallPath, execute
from calls.functions import FunctionCache
from calls.metrics import Metrics, PoolReadout
from calls.spool import ActivationSpool
from scheduler.scheduler import PoolSettings, Scheduler
from scheduler.testing import FakeBackend, fake_version

CALLS = 20_000
CONCURRENCY = 64
META: dict[str, Any] = {
    "method": "POST",
    "path": "/",
    "query": "",
    "headers": [["Host", "127.0.0.1"], ["Content-Type", "application/json"]],
    "content_type": "application/json",
    "client": "127.0.0.1",
}
BODY = orjson.dumps({"data": "x" * 1000})


class _Echo:
    """An instance connection that answers `invoke` on the next turn of the loop."""

    closed = False
    usable = True

    async def call(
        self, meta: Any, body: bytes = b"", *, timeout_s: float | None = None
    ) -> tuple[Any, bytes]:
        await asyncio.sleep(0)
        if meta["op"] != "invoke":
            return {"ok": True}, b""
        return {"ok": True, "status": 200, "headers": [], "logs": ""}, body

    def close(self) -> None:
        pass


class _NoStore:
    async def record_activations(self, batch: Sequence[Any]) -> None:
        pass


async def _measure(work: Path) -> dict[str, float]:
    backend = FakeBackend()

    async def connect(handle: Any, max_body_bytes: int) -> _Echo:
        return _Echo()

    scheduler = Scheduler(backend, PoolSettings(generic_pool_size=0), connect=connect)
    await scheduler.start()
    spool = ActivationSpool(work / "activations.spool")
    activations = ActivationWriter(_NoStore(), spool=spool)  # type: ignore[arg-type]
    metrics = Metrics(lambda: {}, lambda: 0, lambda: 0, lambda: PoolReadout({}, {}, {}, {}))
    calls = CallPath(
        scheduler=scheduler,
        functions=FunctionCache(_NoStore()),  # type: ignore[arg-type]
        activations=activations,
        metrics=metrics,
    )
    version = fake_version("echo")

    async def one() -> None:
        result = await execute(calls, version, new_activation_id(), META, BODY)  # type: ignore[arg-type]
        if result.status != "success":
            raise RuntimeError(f"the call failed: {result}")

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()
        activations._pending.clear()  # (never written: the memory stays flat)

    try:
        await asyncio.gather(*(worker(50) for _ in range(CONCURRENCY)))  # instances up
        t0 = time.process_time()
        await worker(CALLS)
        sequential_s = time.process_time() - t0
        per_worker = CALLS // CONCURRENCY
        t0 = time.process_time()
        await asyncio.gather(*(worker(per_worker) for _ in range(CONCURRENCY)))
        concurrent_s = time.process_time() - t0
    finally:
        await scheduler.stop()
        spool.close()
    return {
        "sequential_us": sequential_s / CALLS * 1e6,
        "concurrent_us": concurrent_s / (per_worker * CONCURRENCY) * 1e6,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ember-callpath-") as tmp:
        result = uvloop.run(_measure(Path(tmp)))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
