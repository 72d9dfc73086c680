"""What a slow or hostile client does to the gateway (issue 14): connections held open with
trickled headers, bodies announced and never sent, old or odd request lines, and requests that
used to end in a plain-text 500. Every answer is bounded in time and is the JSON error shape.

The timeouts are settings, set small here; each wait is bounded by them plus a margin for a
loaded machine."""

from __future__ import annotations

import asyncio
import io
import resource
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.app import build_app
from gateway.connections import GatewayRunner
from gateway.platform import Platform
from gateway.settings import HttpSettings, Settings
from scheduler.scheduler import PoolSettings
from store.embedded import start_embedded_postgres
from tests.conftest import ROOT, TOKEN, PlatformFactory, Running, shared

ECHO = textwrap.dedent("""
    def handler(event, context):
        return event
""")
SHORT = HttpSettings(
    header_timeout_s=1.0, body_timeout_s=1.0, idle_timeout_s=1.0, max_connections=1000
)
MARGIN_S = 10.0  # a loaded 2-core machine: the loop may be late, never this late


async def exchange(url: str, data: bytes, *, wait_s: float = MARGIN_S) -> tuple[bytes, bool]:
    """Send raw bytes; what came back, and whether the server closed within `wait_s`."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    received = b""
    closed = False
    try:
        writer.write(data)
        async with asyncio.timeout(wait_s):
            while chunk := await reader.read(65536):
                received += chunk
            closed = True
    except TimeoutError:
        pass
    except ConnectionError:  # closed with our bytes unread: a reset
        closed = True
    finally:
        writer.close()
    return received, closed


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers.get("content-type", "").startswith("application/json"), raw[:300]
    return status, headers, orjson.loads(body)


async def json_error(response: aiohttp.ClientResponse, status: int, code: str | None = None) -> str:
    assert response.content_type == "application/json", await response.text()
    error = (await response.json())["error"]
    assert response.status == status, error
    if code is not None:
        assert error["code"] == code, error
    message: str = error["message"]
    return message


@pytest.fixture
async def short(make_platform: PlatformFactory) -> AsyncIterator[Running]:
    async with make_platform(http=SHORT) as running:
        await running.deploy_ok("echo", ECHO)
        yield running


# -- timeouts ---------------------------------------------------------------------------------


async def test_headers_trickled_byte_by_byte_get_408_within_the_header_timeout(
    short: Running,
) -> None:
    host, port = short.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()

    async def trickle() -> None:
        while True:  # a byte every 0.2 s: each arrives well within any per-read timeout
            await asyncio.sleep(0.2)
            writer.write(b"x")

    trickling = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(SHORT.header_timeout_s + MARGIN_S):
            raw = await reader.read()
    finally:
        trickling.cancel()
        writer.close()
    assert time.monotonic() - started < SHORT.header_timeout_s + MARGIN_S
    status, headers, body = parse(raw)
    assert (status, body["error"]["code"]) == (408, "header_timeout")
    assert headers["connection"] == "close"


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    short: Running,
) -> None:
    raw, closed = await exchange(short.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200")
    assert closed, "the idle connection stayed open"


async def test_a_body_announced_and_never_sent_gets_408_within_the_body_timeout(
    short: Running,
) -> None:
    started = time.monotonic()
    raw, closed = await exchange(
        short.url,
        b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{",
    )
    assert closed
    assert time.monotonic() - started < SHORT.body_timeout_s + MARGIN_S
    status, _, body = parse(raw)
    assert (status, body["error"]["code"]) == (408, "body_timeout")
    assert "FN_BODY_TIMEOUT" in body["error"]["message"]


async def test_an_unterminated_chunked_body_gets_408(short: Running) -> None:
    raw, closed = await exchange(
        short.url,
        b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    )
    assert closed
    status, _, body = parse(raw)
    assert (status, body["error"]["code"]) == (408, "body_timeout")


async def test_a_body_announced_over_the_limit_gets_413_before_it_is_sent(
    short: Running,
) -> None:
    raw, _closed = await exchange(
        short.url,
        b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n\r\n{",
        wait_s=SHORT.body_timeout_s / 2,  # answered before the body timeout could
    )
    status, headers, body = parse(raw)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert headers["connection"] == "close"


async def test_expect_100_continue_over_the_limit_gets_413_and_no_continue(
    short: Running,
) -> None:
    raw, _ = await exchange(
        short.url,
        b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n"
        b"Expect: 100-continue\r\n\r\n",
        wait_s=SHORT.body_timeout_s / 2,
    )
    assert b"100 Continue" not in raw
    status, _, body = parse(raw)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


async def test_expect_100_continue_within_the_limit_is_invited_and_served(
    short: Running,
) -> None:
    host, port = short.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    async with asyncio.timeout(MARGIN_S):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert raw.endswith(b"{}")


@pytest.mark.parametrize(
    ("line", "status", "code"),
    [
        (b"GET /healthz\r\n", 400, "bad_request_line"),  # HTTP/0.9: waits for an answer
        (b"GET /healthz\r\n\r\n", 400, "bad_request_line"),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505, "http_version_not_supported"),
    ],
)
async def test_a_request_line_without_http_1_gets_an_error_at_once(
    short: Running, line: bytes, status: int, code: str
) -> None:
    raw, closed = await exchange(short.url, line, wait_s=SHORT.header_timeout_s / 2)
    assert closed
    assert parse(raw)[0] == status
    assert parse(raw)[2]["error"]["code"] == code


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


# -- every error is JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1", 404, "not_found"),
        ("GET", "/v1/nosuch", 404, "not_found"),
        ("GET", "/v1/openapi.json", 404, "not_found"),
        ("GET", "/nosuch", 404, "not_found"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
        ("PATCH", "/v1/functions", 405, "method_not_allowed"),
        ("POST", "/fn/pi%00ng", 400, "bad_name"),
        ("POST", "/fn/%ff%fe", 400, "bad_name"),
        ("POST", "/fn/Echo", 400, "bad_name"),
        ("POST", "/fn/echo:2147483648", 400, "bad_version"),
        ("POST", "/fn/echo:" + "9" * 5000, 400, "bad_version"),
        ("POST", "/fn/echo:-1", 400, "bad_version"),
        ("POST", "/fn/echo:0", 400, "bad_version"),
        ("POST", "/fn/echo:\u00b2", 400, "bad_version"),
        ("GET", "/v1/functions/pi%00ng", 404, "function_not_found"),
        ("GET", "/v1/functions/%ff/versions", 404, "function_not_found"),
        ("GET", "/v1/functions/echo/activations?limit=\u00b2", 400, "bad_limit"),
        ("GET", "/v1/functions/echo/activations?limit=" + "9" * 5000, 400, "bad_limit"),
        ("DELETE", "/v1/triggers/" + "9" * 40, 400, "bad_trigger_id"),
        ("GET", "/v1/activations/%00", 400, "bad_activation_id"),
    ],
)
async def test_bad_paths_get_json_errors_not_plain_500s(
    short: Running, method: str, path: str, status: int, code: str
) -> None:
    async with short.http.request(
        method, f"{short.url}{path}", headers=short.admin_headers
    ) as response:
        await json_error(response, status, code)
    assert (await short.call("echo", {"still": "up"})).status == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (method, path, body)
        for method, path in [
            ("POST", "/v1/functions"),
            ("POST", "/v1/functions/echo/rollback"),
            ("PUT", "/v1/policy"),
            ("POST", "/v1/events/orders"),
        ]
        for body in [b"{", b"\xff\xfe", b"[1, 2]"]
    ]
    + [
        ("POST", "/v1/functions", b'{"name": "x", "source": 5}'),
        ("POST", "/v1/functions", b'{"name": "x", "source": "", "concurrency": "\xc2\xb2"}'),
        ("POST", "/v1/functions/echo/rollback", b'{"to": 99999999999999999999999}'),
        ("PUT", "/v1/policy", b'{"min_warm": "\xc2\xb2"}'),
    ],
)
async def test_bad_json_on_admin_routes_gets_400(
    short: Running, method: str, path: str, body: bytes
) -> None:
    async with short.http.request(
        method,
        f"{short.url}{path}",
        data=body,
        headers={**short.admin_headers, "Content-Type": "application/json"},
    ) as response:
        assert response.status in (400, 404), await response.text()
        await json_error(response, response.status)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"BREW /fn/echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /fn/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", 400),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
    ],
)
async def test_requests_the_parser_refuses_get_json_errors(
    short: Running, raw: bytes, status: int
) -> None:
    reply, closed = await exchange(short.url, raw)
    assert closed
    assert parse(reply)[0] == status


async def test_an_uncached_function_while_the_database_is_down_is_a_503(tmp_path: Path) -> None:
    pg = await asyncio.to_thread(start_embedded_postgres, tmp_path / "pg")
    settings = Settings(
        port=0,
        state_dir=tmp_path / "state",
        database_url=pg.url,
        token=TOKEN,
        pool=PoolSettings(generic_pool_size=0),
    )
    platform = await Platform.start(settings)
    runner = GatewayRunner(build_app(platform), settings.http, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = "http://{}:{}".format(*runner.addresses[0][:2])
    try:
        await asyncio.to_thread(pg.stop)
        async with aiohttp.ClientSession() as http, http.post(f"{url}/fn/never-seen") as response:
            message = await json_error(response, 503, "database_unavailable")
            assert response.headers["Retry-After"] == "1"
            assert "never-seen" in message
    finally:
        await runner.cleanup()
        await platform.stop()
        await asyncio.to_thread(pg.stop)


async def test_a_deploy_larger_than_a_call_body_is_read_up_to_the_source_limit(
    running: Running,
) -> None:
    """Calls stop at FN_MAX_BODY (6 MiB); a deploy carries up to FN_MAX_SOURCE of code, base64
    in JSON, so the admin API reads more (aiohttp would apply the calls' limit to it)."""
    settings = running.platform.settings
    assert settings.max_source_bytes > settings.max_body_bytes
    body = b"x" * (settings.max_body_bytes + (1 << 20))
    async with running.http.post(f"{running.url}/fn/nosuch", data=io.BytesIO(body)) as response:
        assert response.status == 413

    async def deploy(name: str, source: str) -> tuple[int, Any]:
        body = orjson.dumps({"name": name, "source": source, "filename": "handler.py"})
        headers = {**running.admin_headers, "Content-Type": "application/json"}
        async with running.http.post(
            f"{running.url}/v1/functions", data=io.BytesIO(body), headers=headers
        ) as response:
            return response.status, await response.json()

    source = "def handler(event, context):\n    return 1\n" + "#" * (7 << 20) + "\n"
    status, data = await deploy("big", source)
    assert status == 201, data
    status, data = await deploy("bigger", "#" * (settings.max_source_bytes + 1))
    assert (status, data["error"]["code"]) == (400, "source_too_large"), data
    assert "FN_MAX_SOURCE" in data["error"]["message"]


async def test_a_token_that_is_not_utf8_is_refused_not_an_error(short: Running) -> None:
    raw, _ = await exchange(
        short.url, b"GET /v1/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\r\n\r\n"
    )
    status, _, body = parse(raw)
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_a_body_that_is_not_in_its_content_encoding_gets_400(short: Running) -> None:
    raw, _ = await exchange(
        short.url,
        b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
    )
    status, _, body = parse(raw)
    assert status == 400, body
    assert body["error"]["code"] == "bad_request_body"
