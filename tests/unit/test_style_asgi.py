"""The asgi style in process: bind an app, run calls through it (invoker.styles.asgi)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import types
from typing import Any

import pytest

from invoker import styles
from invoker.context import Context
from invoker.runtime import Runtime
from invoker.styles import asgi

Scope = dict[str, Any]


def module(name: str = "handler") -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__file__ = f"/srv/code/{name.replace('.', '/')}.py"
    return mod


def info(entry: str = "app", function: str = "shop", **kw: Any) -> styles.BindInfo:
    return styles.BindInfo(
        style="asgi",
        entry=entry,
        module=kw.pop("module", None) or module(),
        function=function,
        version=1,
        memory_mb=128,
        timeout_s=30.0,
        **kw,
    )


def call(
    path: str = "/",
    body: bytes = b"",
    *,
    method: str = "GET",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    source: str = "http",
    **kw: Any,
) -> styles.Incoming:
    return styles.Incoming(
        body=body,
        method=method,
        path=path,
        query=query,
        headers=headers if headers is not None else [("Host", "fn.example:8080")],
        source=source,
        context=Context(function="shop", version=1, activation_id="a1", deadline=time.monotonic()),
        **kw,
    )


async def run(bound: styles.Bound, incoming: styles.Incoming) -> styles.Outgoing:
    assert bound.is_async
    result: styles.Outgoing = await bound.run(incoming)
    return result


def header(out: styles.Outgoing, name: str) -> list[str]:
    return [v for k, v in out[1] if k.lower() == name]


# An app that answers with what it saw: the scope (JSON-able parts) and the body.
async def echo(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")  # the spec allows it: the server goes on
    message = await receive()
    seen = {
        k: (v.decode() if isinstance(v, bytes) else v)
        for k, v in scope.items()
        if k not in ("headers", "state", "asgi")
    }
    seen["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
    seen["asgi"] = scope["asgi"]
    seen["body"] = message["body"].decode("latin-1")
    seen["more_body"] = message["more_body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


async def test_the_scope_of_an_http_call() -> None:
    bound = asgi.bind(echo, info())
    assert bound.startup is not None
    await bound.startup()  # raises on the lifespan scope: not supported, not an error
    out = await run(
        bound,
        call(
            "/orders/über 1",
            b'{"a": 1}',
            method="post",
            query="q=a b&x=%26&e=€",
            headers=[
                ("Host", "api.example.com"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-For", "203.0.113.9, 10.0.0.1"),
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Encoding", "gzip"),
                ("Cookie", "a=1; b=2"),
                ("X-Multi", "1"),
                ("X-Multi", "2"),
            ],
        ),
    )
    status, _, body = out
    seen = json.loads(body)
    assert status == 200
    assert seen["type"] == "http"
    assert seen["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert (seen["http_version"], seen["method"], seen["scheme"]) == ("1.1", "POST", "https")
    assert seen["path"] == "/orders/über 1"  # the sub-path: a bare app sees it as at the root
    assert seen["raw_path"] == "/orders/%C3%BCber%201"
    assert seen["root_path"] == "/fn/shop"
    assert seen["query_string"] == "q=a%20b&x=%26&e=%E2%82%AC"
    assert seen["client"] == ["203.0.113.9", 0]
    assert seen["server"] == ["api.example.com", 443]
    assert (seen["body"], seen["more_body"]) == ('{"a": 1}', False)
    # Lowercased, repeated ones kept; what the gateway undid (a decompressed body, chunked
    # transfer) is not claimed; the length is the body's.
    assert seen["headers"] == [
        ["host", "api.example.com"],
        ["x-forwarded-proto", "https"],
        ["x-forwarded-for", "203.0.113.9, 10.0.0.1"],
        ["content-type", "application/json"],
        ["cookie", "a=1; b=2"],
        ["x-multi", "1"],
        ["x-multi", "2"],
        ["content-length", "8"],
    ]


def test_the_query_string_is_re_encoded() -> None:
    """The gateway hands styles yarl's decoded query (escapes of &, =, + and # kept)."""
    assert asgi.raw_query("a=1&b=x%26y") == b"a=1&b=x%26y"
    assert asgi.raw_query("q=red shoes&e=€") == b"q=red%20shoes&e=%E2%82%AC"
    assert asgi.raw_query("off=50%") == b"off=50%25"  # was 50%25
    assert asgi.raw_path("/a b/ü?") == b"/a%20b/%C3%BC%3F"


async def test_defaults_without_forwarding_headers() -> None:
    bound = asgi.bind(echo, info())
    seen = json.loads((await run(bound, call(headers=[("Host", "[::1]:9000")])))[2])
    assert seen["scheme"] == "http"
    assert seen["server"] == ["::1", 9000]
    assert seen["client"] == ["0.0.0.0", 0]  # the caller's address is not known
    assert seen["query_string"] == ""
    assert ["content-length", "0"] not in seen["headers"]
    seen = json.loads((await run(bound, call(headers=[])))[2])
    assert seen["server"] is None


async def test_an_event_is_a_post_to_the_root_with_its_content_type() -> None:
    bound = asgi.bind(echo, info())
    out = await run(
        bound,
        call(
            "/ignored",
            b'{"n": 1}',
            method="GET",
            headers=[("X-Ember-Topic", "orders"), ("X-Ember-Delivery-Id", "d1")],
            source="topic",
            topic="orders",
            event_id="d1",
            content_type="application/json",
        ),
    )
    seen = json.loads(out[2])
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/", '{"n": 1}')
    assert seen["headers"] == [
        ["x-ember-topic", "orders"],
        ["x-ember-delivery-id", "d1"],
        ["content-type", "application/json"],
        ["content-length", "8"],
    ]


async def test_the_response_status_headers_and_chunks() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"set-cookie", b"a=1; Path=/"),
                    (b"set-cookie", b"b=2; HttpOnly"),
                ],
            }
        )
        for part in (b"\x00\x01", b"", b"\xff"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})

    status, headers, body = await run(asgi.bind(app, info()), call())
    assert (status, body) == (201, b"\x00\x01\xff")
    assert headers == [
        ["content-type", "application/octet-stream"],
        ["set-cookie", "a=1; Path=/"],
        ["set-cookie", "b=2; HttpOnly"],
    ]


async def test_a_streaming_response_is_buffered_and_receive_waits_for_its_end() -> None:
    """As a server does, `receive` after the body blocks until the response is complete
    (Starlette's StreamingResponse listens for a disconnect while it streams)."""
    order: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()

        async def listen() -> None:
            message = await receive()
            order.append(message["type"])

        listener = asyncio.create_task(listen())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(3):
            await asyncio.sleep(0)
            order.append(f"chunk {n}")
            await send({"type": "http.response.body", "body": b"%d" % n, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await listener

    out = await run(asgi.bind(app, info()), call())
    assert out[2] == b"012"
    assert order == ["chunk 0", "chunk 1", "chunk 2", "http.disconnect"]


async def test_an_app_that_does_not_answer_is_an_error() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(asgi.NoResponse, match="without sending a response"):
        await run(asgi.bind(app, info()), call())


async def test_an_exception_is_the_functions_error_unless_the_response_was_complete(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def failing(scope: Scope, receive: Any, send: Any) -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await run(asgi.bind(failing, info()), call())

    async def late(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        raise ValueError("a background task failed")  # (after the reply, as in uvicorn)

    assert (await run(asgi.bind(late, info()), call()))[2] == b"done"
    assert "ValueError: a background task failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"type": "http.response.body", "body": b"x"}], "before"),
        ([{"type": "http.response.start", "status": 200}] * 2, "twice"),
        ([{"type": "http.response.start", "status": 101}], "200-599"),
        ([{"type": "websocket.send"}], "websocket.send"),
    ],
)
async def test_protocol_errors_of_the_app_are_named(messages: list[Any], error: str) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    with pytest.raises((RuntimeError, ValueError), match=error):
        await run(asgi.bind(app, info()), call())


class LifespanApp:
    """An app with a lifespan: state set at startup reaches every request (shallow copy)."""

    def __init__(self, fail: str = "") -> None:
        self.events: list[str] = []
        self.fail = fail

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if self.fail == "message":
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    if self.fail == "raise":
                        await send({"type": "lifespan.startup.failed", "message": "trace"})
                        raise ConnectionError("db at localhost:5432 refused")
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        scope["state"]["mutated"] = True  # a request's copy: not seen by the next one
        state = {k: v for k, v in scope["state"].items() if k != "mutated"}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(state).encode()})


async def test_lifespan_startup_state_and_shutdown() -> None:
    app = LifespanApp()
    bound = asgi.bind(app, info())
    assert bound.startup is not None
    assert bound.shutdown is not None
    await bound.startup()
    assert app.events == ["lifespan.startup"]
    for _ in range(2):
        assert (await run(bound, call()))[2] == b'{"db": "connected"}'
    # The runtime runs the shutdown when the instance stops (SIGTERM).
    runtime = Runtime()
    runtime.bound = bound
    await runtime.shut_down()
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


async def test_a_failed_startup_fails_with_the_apps_error() -> None:
    bound = asgi.bind(LifespanApp(fail="message"), info())
    assert bound.startup is not None
    with pytest.raises(asgi.LifespanStartupFailed, match="startup failed: no db"):
        await bound.startup()
    bound = asgi.bind(LifespanApp(fail="raise"), info())
    assert bound.startup is not None
    with pytest.raises(ConnectionError, match="localhost:5432"):
        await bound.startup()


async def test_an_app_without_lifespan_support() -> None:
    async def http_only(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # neither answers nor raises: unsupported
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    bound = asgi.bind(http_only, info())
    assert bound.startup is not None
    assert bound.shutdown is not None
    await bound.startup()
    assert (await run(bound, call()))[0] == 204
    await bound.shutdown()  # nothing to do


# ---- what the entry point may be -----------------------------------------------------------


class Asgi2:
    """An ASGI 2 app: instantiated per scope."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(
            {"type": "http.response.body", "body": b"asgi2 " + self.scope["method"].encode()}
        )


def create_app() -> Any:
    """A factory (uvicorn --factory): called once at bind."""
    return echo


def sync_call(scope: Scope, receive: Any, send: Any) -> Any:
    """A plain def that returns the coroutine (a decorated app)."""
    return echo(scope, receive, send)


@pytest.mark.parametrize("target", [echo, Asgi2, create_app, sync_call, LifespanApp()])
async def test_entry_points_that_are_apps(target: Any) -> None:
    out = await run(asgi.bind(target, info()), call(method="PUT"))
    assert out[0] == 200
    assert b"PUT" in out[2] or b"{}" in out[2]


class Flaskish:
    def wsgi_app(self, environ: Any, start_response: Any) -> Any:
        return []

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return []


def handler(event: Any, context: Any) -> Any:
    return event


@pytest.mark.parametrize(
    ("target", "said"),
    [
        (Flaskish(), "a WSGI app: deploy it with --wsgi"),
        (handler, "def app(event, context) does not fit the asgi style"),
        (lambda: 42, "returned a int, not an ASGI app"),
    ],
)
def test_entry_points_that_are_not_apps(target: Any, said: str) -> None:
    with pytest.raises(styles.StyleMismatch, match=re.escape(said)):
        asgi.bind(target, info())


# ---- where the app sits ---------------------------------------------------------------------


def framework_app(module_name: str) -> Any:
    """An app object whose class comes from `module_name`."""

    async def call_(self: Any, scope: Scope, receive: Any, send: Any) -> None:
        await echo(scope, receive, send)

    return type("App", (), {"__call__": call_, "__module__": module_name})()


@pytest.mark.parametrize(
    ("module_name", "path"),
    [
        ("quart.app", "/fn/shop/a/b"),  # strips root_path itself (a path without it: a 404)
        ("django.core.handlers.asgi", "/fn/shop/a/b"),
        ("litestar.app", "/fn/shop/a/b"),
        ("falcon.asgi.app", "/a/b"),  # routes on path as given
        ("handler", "/a/b"),  # the function's own app
    ],
)
async def test_frameworks_that_expect_path_to_include_root_path(
    module_name: str, path: str
) -> None:
    seen = json.loads((await run(asgi.bind(framework_app(module_name), info()), call("/a/b")))[2])
    assert (seen["path"], seen["root_path"]) == (path, "/fn/shop")
    assert seen["raw_path"] == path


async def test_library_middleware_is_looked_through_the_functions_own_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "handler", module())
    inner = framework_app("quart.app")
    library = type("Sentry", (), {"__module__": "sentry_sdk.integrations.asgi"})()
    library.app = inner
    own = type("Auth", (), {"__module__": "handler"})()
    own.app = inner
    assert asgi.path_includes_root(library, "/srv/code/")
    assert not asgi.path_includes_root(own, "/srv/code/")
    assert asgi.code_dir(module("hello_world.app")) == "/srv/code/"


async def test_the_added_overhead_of_a_call_is_small() -> None:
    """Building the scope and collecting the reply: well under 0.1 ms a call."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    bound = asgi.bind(app, info())
    incoming = call("/a", b"{}", headers=[("Host", "h"), ("Content-Type", "application/json")] * 4)
    for _ in range(200):
        await bound.run(incoming)
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        await bound.run(incoming)
    per_call_ms = (time.perf_counter() - started) * 1000 / n
    assert per_call_ms < 0.1, per_call_ms


async def test_a_streamed_response_stops_at_the_platforms_limit() -> None:
    from invoker.styles import ResponseTooLarge
    from invoker.styles.asgi import exchange

    sent = 0

    async def endless(scope: Any, receive: Any, send: Any) -> None:
        nonlocal sent
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            sent += 1

    with pytest.raises(ResponseTooLarge, match="past 10000 bytes"):
        await exchange(endless, {"type": "http"}, b"", limit=10_000)
    assert sent == 9  # stopped at the chunk that went over, not at the end of the stream
