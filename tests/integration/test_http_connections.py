"""The gateway's connection cap and slow clients: past the cap the connection waiting longest
goes, then the one stalled longest (a body that does not come, a response not read); 20,000
slowloris connections neither starve calls nor outlive the header timeout."""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.settings import HttpSettings
from tests.conftest import ROOT, PlatformFactory, Running, shared
from tests.integration.test_http_hardening import ECHO, MARGIN_S, exchange, parse

# -- the connection cap -----------------------------------------------------------------------


async def test_past_the_cap_the_longest_waiting_connection_is_closed_or_503_when_all_are_busy(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    cap = 20
    limits = HttpSettings(
        header_timeout_s=30, body_timeout_s=30, idle_timeout_s=30, max_connections=cap
    )
    flags = shared(tmp_path)
    async with make_platform(http=limits, pool={"max_instances": cap}) as running:
        await running.deploy_ok("echo", ECHO)
        await running.deploy_ok("hold", hold(flags), concurrency=cap)
        host, port = running.url.removeprefix("http://").split(":")
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(cap)]
        # One more: the first idle connection (waiting longest) makes room for it.
        extra = await asyncio.open_connection(host, int(port))
        async with asyncio.timeout(MARGIN_S):
            assert await idle[0][0].read() == b""
        for _, writer in [*idle, extra]:
            writer.close()

        # With none idle, the connection stalled longest on a body that does not come goes.
        stalled = []
        for _ in range(cap):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            async with asyncio.timeout(MARGIN_S):
                await reader.readuntil(b"100 Continue\r\n\r\n")
            stalled.append((reader, writer))
        assert (await running.call("echo", {"a": 1})).status == 200
        async with asyncio.timeout(MARGIN_S):
            assert await stalled[0][0].read() == b""
        for _, writer in stalled:
            writer.close()

        # Connections running a handler are never closed for room: one more gets 503.
        (flags / "hold").touch()
        calls = [asyncio.create_task(raw_call(host, int(port), "hold")) for _ in range(cap)]
        await running.platform.scheduler.wait_until(
            lambda: sum(i.busy for i in running.platform.scheduler.instances_of("hold")) == cap,
            MARGIN_S * 3,
        )
        started = time.monotonic()
        raw, closed = await exchange(running.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed
        assert time.monotonic() - started < MARGIN_S
        status, headers, body = parse(raw)
        assert (status, body["error"]["code"], headers["retry-after"]) == (
            503,
            "too_many_connections",
            "1",
        )
        (flags / "hold").unlink()
        for call in calls:
            async with asyncio.timeout(MARGIN_S):
                assert (await call).startswith(b"HTTP/1.1 200")
        assert (await running.call("echo", {"a": 2})).status == 200


def hold(flag_dir: Path) -> str:
    """A handler that answers once the test removes its flag file."""
    return (
        "import os, time\n\n"
        "def handler(event, context):\n"
        f"    while os.path.exists({str(flag_dir / 'hold')!r}):\n"
        "        time.sleep(0.01)\n"
        "    return 'done'\n"
    )


async def raw_call(host: str, port: int, name: str) -> bytes:
    """A call on a connection of its own, its whole response."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST /fn/{name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
    )
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_a_client_that_does_not_read_its_response_is_closed_or_evicted(
    make_platform: PlatformFactory,
) -> None:
    """Large responses to clients that never read: past the cap the longest stalled goes, so
    new clients are served; each is closed at the write timeout anyway."""
    cap = 6
    limits = HttpSettings(
        header_timeout_s=30,
        body_timeout_s=30,
        idle_timeout_s=30,
        write_timeout_s=3,
        max_connections=cap,
    )
    size = 5 << 20
    big = f"def handler(event, context):\n    return context.response(b'x' * {size})\n"
    async with make_platform(http=limits) as running:
        await running.deploy_ok("big", big)
        host, port = running.url.removeprefix("http://").split(":")
        readers = []
        for _ in range(cap):
            # A small receive buffer (no autotuning): the server's write soon waits on it.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 12)
            writer.write(b"POST /fn/big HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            readers.append((reader, writer))
        for reader, _ in readers:  # the response has begun; its client reads no more of it
            async with asyncio.timeout(MARGIN_S * 3):
                await reader.readuntil(b"\r\n\r\n")
        stalled_at = time.monotonic()
        for _ in range(3):  # new clients are served, the stalled ones make room
            response = await running.call("big", {})
            assert response.status == 200
            assert len(await response.read()) == size
        # Past the write timeout (waited for on the clock, with a margin for a late loop), every
        # stalled response was cut: reading now ends early, not with the whole body.
        await asyncio.sleep(max(0.0, stalled_at + limits.write_timeout_s - time.monotonic()) + 2)
        for reader, writer in readers:
            received = 0
            async with asyncio.timeout(MARGIN_S):
                while chunk := await reader.read(1 << 20):
                    received += len(chunk)
            assert received < size
            writer.close()


@pytest.mark.timeout(240)
async def test_slowloris_with_20000_connections_neither_starves_calls_nor_outlives_the_timeout(
    make_platform: PlatformFactory,
) -> None:
    """20,000 connections (from two processes: each has its own open-files limit) trickle a
    header byte every 2 s. The gateway holds at most `max_connections` of them, closes the
    longest waiting to make room, and closes each one within the header timeout; calls on new
    connections succeed all the while."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 12_000:
        pytest.skip(f"the open-files limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    per_client, header_timeout_s = 10_000, 5.0
    limits = HttpSettings(
        header_timeout_s=header_timeout_s,
        body_timeout_s=30,
        idle_timeout_s=30,
        max_connections=min(8_000, hard // 2),
    )
    try:
        async with make_platform(http=limits) as running:
            await running.deploy_ok("echo", ECHO)
            port = running.url.rsplit(":", 1)[1]
            clients = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.integration.slowloris",
                    "127.0.0.1",
                    port,
                    str(per_client),
                    "2",
                    "60",
                    stdout=asyncio.subprocess.PIPE,
                    cwd=ROOT,
                )
                for _ in range(2)
            ]
            try:
                reports = await _calls_while(running, clients)
            finally:
                for client in clients:
                    if client.returncode is None:
                        client.kill()
                    await client.wait()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for report in reports:
        assert report["opened"] == per_client, report
        assert report["closed_by_server"] == per_client, report
        assert report["max_lifetime_s"] < header_timeout_s + MARGIN_S, report


async def _calls_while(
    running: Running, clients: list[asyncio.subprocess.Process]
) -> list[dict[str, Any]]:
    """Call `echo` on a new connection each time until every client has its connections open
    (20 calls at least); then the clients' reports."""

    async def opened(client: asyncio.subprocess.Process) -> None:
        assert client.stdout is not None
        line = await client.stdout.readline()
        assert line.startswith(b"open "), line

    all_open = asyncio.gather(*(opened(c) for c in clients))
    calls = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while not all_open.done() or calls < 20:
            async with http.post(f"{running.url}/fn/echo", json={"n": calls}) as response:
                assert response.status == 200, await response.text()
                assert await response.json() == {"n": calls}
            calls += 1
    await all_open
    reports = []
    for client in clients:
        assert client.stdout is not None
        reports.append(orjson.loads(await client.stdout.readline()))
    async with running.http.post(f"{running.url}/fn/echo", json={}) as response:
        assert response.status == 200
    return reports
