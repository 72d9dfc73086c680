"""A slowloris client, run as a process of its own by test_http_hardening (its sockets do not
count against the gateway's open files): opens COUNT connections to HOST:PORT, each sending
the start of a request and then one header byte every INTERVAL seconds, and reports how long
each lasted before the server closed it.

Prints `open N` once every connection has sent its first bytes, then one JSON line,
{"opened", "closed_by_server", "max_lifetime_s"}, when all are closed or after LIMIT seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import uvloop

START = b"POST /fn/echo HTTP/1.1\r\nHost: slow\r\nX-Slow: "
Opened = tuple[asyncio.StreamReader, asyncio.StreamWriter, float]


async def connect(host: str, port: int) -> Opened | None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return None
    writer.write(START)
    return reader, writer, time.monotonic()


async def hold(opened: Opened, interval_s: float) -> float:
    """Trickle header bytes until the server closes; the lifetime from the first byte."""
    reader, writer, first = opened
    try:
        while True:
            try:
                async with asyncio.timeout(interval_s):
                    if not await reader.read(4096):  # else the server's 408: its close follows
                        break
            except TimeoutError:
                writer.write(b"x")
    except OSError:
        pass
    writer.close()
    return time.monotonic() - first


async def main(host: str, port: int, count: int, interval_s: float, limit_s: float) -> None:
    holding: list[asyncio.Task[float]] = []
    # In batches: a burst of 20,000 SYNs would overflow the listen backlog.
    for start in range(0, count, 500):
        batch = await asyncio.gather(
            *(connect(host, port) for _ in range(start, min(count, start + 500)))
        )
        holding += [asyncio.create_task(hold(c, interval_s)) for c in batch if c is not None]
    print(f"open {len(holding)}", flush=True)
    done, pending = await asyncio.wait(holding, timeout=limit_s)
    for task in pending:
        task.cancel()
    lifetimes = [t.result() for t in done]
    report = {
        "opened": len(holding),
        "closed_by_server": len(lifetimes),
        "max_lifetime_s": max(lifetimes, default=0.0),
    }
    print(orjson.dumps(report).decode(), flush=True)


if __name__ == "__main__":
    host, port, count, interval_s, limit_s = sys.argv[1:6]
    uvloop.run(main(host, int(port), int(count), float(interval_s), float(limit_s)))
