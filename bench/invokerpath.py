"""`python -P bench/invokerpath.py`: the CPU time an invoker instance spends per warm call,
without the gateway: one instance (`python -m invoker`, no sandbox) specialized with the
trivial echo handler, called over its Unix socket with the frames the gateway sends (1 KB
JSON body, a request's metadata), one call at a time. It prints one JSON line: microseconds of
the instance's CPU (user + system) per call. `bench.throughput` runs it for this tree and, with
`--baseline DIR`, for that checkout (`-P` and `PYTHONPATH=DIR`: its invoker and protocol).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop

from invoker.protocol import Connection

CALLS = 20_000
ECHO = "def handler(event, context):\n    return event\n"
META: dict[str, Any] = {
    "method": "POST",
    "path": "/",
    "query": "",
    "headers": [
        ["Host", "127.0.0.1:8080"],
        ["Content-Type", "application/json"],
        ["Content-Length", "1012"],
    ],
    "content_type": "application/json",
    "client": "127.0.0.1",
    "op": "invoke",
    "id": "0192f0a8-6c1e-7b3a-9d2e-4f5a6b7c8d9e",
    "timeout_s": 30.0,
}
BODY = orjson.dumps({"data": "x" * 1000})


async def _measure(address: str, pid: int) -> dict[str, float]:
    conn = None
    for _ in range(200):  # until it listens
        try:
            conn = await Connection.open(address, 0)
            break
        except OSError:
            await asyncio.sleep(0.02)
    assert conn is not None, "the invoker did not start"
    reply, _ = await conn.call(
        {
            "op": "specialize",
            "function": "echo",
            "version": 1,
            "filename": "handler.py",
            "entry": "handler",
            "env": {},
            "timeout_s": 30,
            "memory_bytes": 256 << 20,
            "concurrency": 1,
        },
        ECHO.encode(),
    )
    if not reply.get("ok"):
        raise RuntimeError(f"specialize failed: {reply}")
    meta: Any = META
    for _ in range(1000):  # warm
        await conn.call(meta, BODY, timeout_s=30)
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    t0 = time.perf_counter()
    for _ in range(CALLS):
        reply, out = await conn.call(meta, BODY, timeout_s=30)
    elapsed_s = time.perf_counter() - t0
    after = proc.cpu_times()
    if not reply.get("ok") or out != BODY:
        raise RuntimeError(f"the call failed: {reply}")
    conn.close()
    spent = (after.user - before.user) + (after.system - before.system)
    return {"instance_us": spent / CALLS * 1e6, "round_trip_us": elapsed_s / CALLS * 1e6}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ember-invokerpath-") as tmp:
        address = f"unix:{Path(tmp) / 'i.sock'}"
        process = subprocess.Popen(
            [sys.executable, "-m", "invoker", "--host", address], stdout=subprocess.DEVNULL
        )
        try:
            result = uvloop.run(_measure(address, process.pid))
        finally:
            process.terminate()
            process.wait(timeout=30)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
