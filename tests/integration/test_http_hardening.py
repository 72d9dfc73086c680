"""What a slow or hostile client does to the gateway (issue 14): connections held open with
trickled headers, bodies announced and never sent, old or odd request lines, and requests that
used to end in a plain-text 500. Every answer is bounded in time and is the JSON error shape.

The timeouts are settings, set small here; each wait is bounded by them plus a margin for a
loaded machine."""

from __future__ import annotations

import asyncio
import io
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
from tests.conftest import TOKEN, PlatformFactory, Running

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


async def test_trickled_headers_after_a_whole_request_get_408_within_the_header_timeout(
    make_platform: PlatformFactory,
) -> None:
    """The header deadline's timer is armed only when a request's headers do not come in one
    read: a keep-alive connection whose second request trickles still meets the header timeout,
    not the (much longer) idle one."""
    http = HttpSettings(header_timeout_s=1.0, body_timeout_s=1.0, idle_timeout_s=60.0)
    async with make_platform(http=http) as running:
        host, port = running.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # whole, in one read
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started = time.monotonic()

            async def trickle() -> None:
                while True:
                    await asyncio.sleep(0.2)
                    writer.write(b"x")

            trickling = asyncio.create_task(trickle())
            try:
                async with asyncio.timeout(http.header_timeout_s + MARGIN_S):
                    raw = await reader.read()
            finally:
                trickling.cancel()
        finally:
            writer.close()
    assert time.monotonic() - started < http.header_timeout_s + MARGIN_S
    status, _, body = parse(raw)
    assert (status, body["error"]["code"]) == (408, "header_timeout")


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


# -- every error is JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1", 404, "not_found"),
        ("GET", "/v1/nosuch", 404, "not_found"),
        ("GET", "/v1/openapi.yaml", 404, "not_found"),
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
