"""ASGI apps deployed unchanged, through the gateway: a bare app, and FastAPI installed from
the package index (real Postgres, real invoker processes)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PlatformFactory, Running, shared

pytestmark = pytest.mark.timeout(300)

BARE = textwrap.dedent("""
    import json, os

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["greeting"] = "hello from startup"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if os.environ.get("OUT"):
                        with open(os.environ["OUT"], "a") as f:
                            f.write("lifespan shutdown\\n")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        if path == "/boom":
            raise RuntimeError("boom at " + path)
        if path == "/silent":
            return
        if path == "/bytes":
            headers = [(b"content-type", b"application/octet-stream")]
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": body[::-1], "more_body": True})
            await send({"type": "http.response.body", "body": b"\\x00"})
            return
        if path == "/cookies":
            headers = [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; HttpOnly"),
                       (b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 418, "headers": headers})
            await send({"type": "http.response.body", "body": b"short and stout"})
            return
        if method == "POST" and path == "/" and os.environ.get("OUT"):
            with open(os.environ["OUT"], "a") as f:
                f.write(body.decode() + "\\n")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen = {
            "method": method, "path": path, "root_path": scope["root_path"],
            "query": scope["query_string"].decode(), "body": body.decode("latin-1"),
            "greeting": scope["state"].get("greeting"), "scheme": scope["scheme"],
            "cookie": headers.get("cookie"), "type": headers.get("content-type"),
            "topic": headers.get("x-ember-topic"),
        }
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})
""")


async def submit_async(running: Running, target: str, **kwargs: Any) -> str:
    async with running.http.post(
        f"{running.url}/fn/{target}", headers={"Prefer": "respond-async"}, **kwargs
    ) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["activation_id"])


async def wait_done(running: Running, activation_id: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        _, data = await running.admin("GET", f"/v1/activations/{activation_id}")
        if data["status"] in ("succeeded", "dead"):
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_lines(path: Path, n: int, timeout_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while len(lines := lines_of(path)) < n:
        assert time.monotonic() < deadline, lines
        await asyncio.sleep(0.05)
    return lines


async def publish(running: Running, function: str, topic: str, payload: Any) -> None:
    assert (await running.admin("PUT", f"/v1/topics/{topic}"))[0] == 201
    status, trigger = await running.admin(
        "POST", f"/v1/functions/{function}/triggers", json={"topic": topic}
    )
    assert status == 201, trigger
    status, published = await running.admin("POST", f"/v1/events/{topic}", json=payload)
    assert (status, published["deliveries"]) == (202, 1), published


async def test_a_bare_asgi_app(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "events"
    deployed = await running.deploy_ok("bare", BARE, env={"OUT": str(out)})
    assert (deployed["style"], deployed["style_detected"]) == ("asgi", True)
    url = f"{running.url}/fn/bare"

    async with running.http.put(
        f"{url}/orders/7?q=a%20b&tag=x&tag=y",
        data=b"hello",
        headers={"Content-Type": "text/plain", "Cookie": "sid=abc", "X-Forwarded-Proto": "https"},
    ) as response:
        assert response.status == 200
        seen = await response.json()
    assert seen == {
        "method": "PUT",
        "path": "/orders/7",
        "root_path": "/fn/bare",
        "query": "q=a%20b&tag=x&tag=y",
        "body": "hello",
        "greeting": "hello from startup",  # the lifespan's state reaches every request
        "scheme": "https",
        "cookie": "sid=abc",
        "type": "text/plain",
        "topic": None,
    }
    async with running.http.get(url) as response:  # /fn/NAME itself: the root
        assert (await response.json())["path"] == "/"

    async with running.http.post(f"{url}/bytes", data=b"\x01\x02\xff") as response:
        assert response.status == 201
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.read() == b"\xff\x02\x01\x00"

    async with running.http.get(f"{url}/cookies") as response:
        assert response.status == 418
        assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
        assert await response.text() == "short and stout"

    async with running.http.get(f"{url}/boom") as response:
        assert response.status == 500
        error = (await response.json())["error"]
        assert (error["type"], error["message"]) == ("RuntimeError", "boom at /boom")
    async with running.http.get(f"{url}/silent") as response:
        assert response.status == 500
        error = (await response.json())["error"]
        assert error["type"] == "NoResponse"
        assert "returned without sending a response" in error["message"]

    # An async delivery: still an HTTP request, answered later.
    activation = await submit_async(running, "bare/later?n=1", json={"n": 1})
    done = await wait_done(running, activation)
    assert done["status"] == "succeeded", done
    assert done["result"]["path"] == "/later"
    assert done["result"]["body"] == '{"n": 1}'

    # A topic event: a POST to / with the payload and its content type.
    await publish(running, "bare", "orders", {"order": 7})
    assert await wait_lines(out, 1) == ['{"order": 7}']


FASTAPI = textwrap.dedent("""
    from contextlib import asynccontextmanager

    from fastapi import Cookie, FastAPI, Request, Response
    from fastapi.responses import PlainTextResponse, StreamingResponse
    from pydantic import BaseModel

    events = []

    @asynccontextmanager
    async def lifespan(app):
        yield {"db": "connected at startup"}

    app = FastAPI(lifespan=lifespan)
    v2 = FastAPI()

    class Item(BaseModel):
        name: str
        price: float

    @app.get("/items/{item_id}")
    def read_item(item_id: int, request: Request, q: str | None = None):
        return {"item_id": item_id, "q": q, "db": request.state.db,
                "url": str(request.url), "self": str(request.url_for("read_item", item_id=1))}

    @app.post("/items", status_code=201)
    def create_item(item: Item, response: Response):
        response.headers["X-Item"] = item.name
        return item

    @app.get("/login")
    def login(response: Response, seen: str | None = Cookie(None)):
        response.set_cookie("session", "s1", httponly=True)
        response.set_cookie("theme", "dark")
        return {"seen": seen}

    @app.get("/text", response_class=PlainTextResponse)
    def text():
        return "plain words"

    @app.get("/stream")
    def stream():
        return StreamingResponse((f"line {n}\\n" for n in range(3)), media_type="text/plain")

    @app.post("/")
    async def event(request: Request):
        events.append(await request.json())
        return {"events": events, "type": request.headers["content-type"]}

    @app.get("/events")
    def list_events():
        return events

    @v2.get("/ping")
    def ping():
        return {"pong": True}

    app.mount("/v2", v2)
""")


async def test_a_fastapi_app(running: Running) -> None:
    deployed = await running.deploy_ok(
        "shop", FASTAPI, style="asgi", entry="app", requirements="fastapi\n"
    )
    assert deployed["style"] == "asgi"
    url = f"{running.url}/fn/shop"

    async with running.http.get(f"{url}/items/5?q=red%20shoes") as response:
        assert response.status == 200
        assert await response.json() == {
            "item_id": 5,
            "q": "red shoes",
            "db": "connected at startup",
            "url": f"{url}/items/5?q=red%20shoes",
            "self": f"{url}/items/1",
        }
    async with running.http.get(f"{url}/items/x") as response:
        assert response.status == 422  # FastAPI's validation error, passed as it is
    async with running.http.post(f"{url}/items", json={"name": "hat", "price": 9.5}) as response:
        assert (response.status, response.headers["X-Item"]) == (201, "hat")
        assert await response.json() == {"name": "hat", "price": 9.5}
    async with running.http.delete(f"{url}/items") as response:
        assert response.status == 405
    async with running.http.get(f"{url}/nowhere") as response:
        assert response.status == 404

    async with running.http.get(f"{url}/login", headers={"Cookie": "seen=yes"}) as response:
        assert await response.json() == {"seen": "yes"}
        cookies = response.headers.getall("Set-Cookie")
    assert [c.split(";")[0] for c in cookies] == ["session=s1", "theme=dark"]

    async with running.http.get(f"{url}/text") as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await response.text() == "plain words"
    async with running.http.get(f"{url}/stream") as response:
        assert await response.text() == "line 0\nline 1\nline 2\n"  # buffered, whole
    async with running.http.get(f"{url}/v2/ping") as response:  # a mounted sub-app
        assert await response.json() == {"pong": True}
    async with running.http.get(f"{url}/openapi.json") as response:
        assert "/items/{item_id}" in (await response.json())["paths"]

    activation = await submit_async(running, "shop/items", json={"name": "cap", "price": 3})
    done = await wait_done(running, activation)
    assert (done["status"], done["result"]) == ("succeeded", {"name": "cap", "price": 3.0})

    await publish(running, "shop", "sales", {"sale": 1})
    deadline = time.monotonic() + 30
    while not (events := await (await running.http.get(f"{url}/events")).json()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert events == [{"sale": 1}]
    _, listed = await running.admin("GET", "/v1/functions/shop/activations")
    topic_calls = [a for a in listed["activations"] if a.get("source") == "topic"]
    assert all(a["status"] == "success" for a in topic_calls), json.dumps(listed)[:2000]


async def test_the_lifespan_shutdown_runs_when_an_instance_stops(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    out = shared(tmp_path) / "out"
    async with make_platform() as running:
        await running.deploy_ok("bare", BARE, env={"OUT": str(out)})
        async with running.http.get(f"{running.url}/fn/bare") as response:
            assert response.status == 200
    assert lines_of(out) == ["lifespan shutdown"]  # (invoker/runtime.py, on SIGTERM)
