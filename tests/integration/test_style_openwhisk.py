"""OpenWhisk actions deployed unchanged: web actions over HTTP through the gateway, raw HTTP
handling, an async delivery and a topic event, against real Postgres and invoker processes."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import orjson

from tests.conftest import Running, shared
from tests.integration.test_events import submit, wait_for_lines, wait_for_status

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"

# A web action in the shape OpenWhisk's docs give: args in, a dict (or an HTTP response) out.
WEB_ACTION = textwrap.dedent(f"""
    import base64
    import os

    PNG = {PNG!r}

    def main(args):
        path = args.get("__ow_path", "")
        if path == "/echo":
            return {{
                "args": {{k: v for k, v in args.items() if k != "__ow_headers"}},
                "agent": args["__ow_headers"].get("x-agent"),
                "activation": os.environ["__OW_ACTIVATION_ID"],
                "action": os.environ["__OW_ACTION_NAME"],
            }}
        if path == "/page":
            return {{"body": "<p>hello " + args.get("name", "you") + "</p>"}}
        if path == "/png":
            return {{
                "headers": {{"Content-Type": "image/png", "Cache-Control": "max-age=60"}},
                "body": base64.b64encode(PNG).decode(),
            }}
        if path == "/created":
            headers = {{"Location": "/orders/7"}}
            return {{"statusCode": 201, "headers": headers, "body": {{"id": 7}}}}
        if path == "/redirect":
            return {{"statusCode": 302, "headers": {{"location": "https://openwhisk.apache.org"}}}}
        if path == "/missing":
            return {{"error": {{"statusCode": 404, "body": {{"message": "no such order"}}}}}}
        if path == "/invalid":
            return {{"error": "name is required"}}
        if path == "/crash":
            raise RuntimeError("boom")
        if path == "/string":
            return "not a dict"
        return {{"greeting": "Hello " + args.get("name", "stranger") + "!"}}
""")


async def test_web_actions_end_to_end(running: Running) -> None:
    deployed = await running.deploy_ok("ow", WEB_ACTION)
    assert (deployed["style"], deployed["handler"], deployed["style_detected"]) == (
        "openwhisk",
        "main",
        True,
    )
    url = f"{running.url}/fn/ow"

    async with running.http.get(f"{url}?name=Jane") as response:
        assert response.status == 200
        assert await response.json() == {"greeting": "Hello Jane!"}
        assert response.headers["Access-Control-Allow-Origin"] == "*"

    async with running.http.post(
        f"{url}/echo?name=Query&page=2", json={"name": "Body"}, headers={"X-Agent": "t"}
    ) as response:
        assert response.status == 200
        echoed = await response.json()
    assert echoed["args"] == {
        "name": "Body",
        "page": "2",
        "__ow_method": "post",
        "__ow_path": "/echo",
    }
    assert echoed["agent"] == "t"
    assert echoed["action"] == "/guest/ow"
    assert len(echoed["activation"]) > 8

    async with running.http.get(f"{url}/page?name=Ann") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
        assert await response.text() == "<p>hello Ann</p>"

    async with running.http.get(f"{url}/png") as response:
        assert (response.status, response.headers["Content-Type"]) == (200, "image/png")
        assert response.headers["Cache-Control"] == "max-age=60"
        assert await response.read() == PNG

    async with running.http.post(f"{url}/created") as response:
        assert (response.status, response.headers["Location"]) == (201, "/orders/7")
        assert await response.json() == {"id": 7}

    async with running.http.get(f"{url}/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "https://openwhisk.apache.org"

    async with running.http.get(f"{url}/missing") as response:
        assert (response.status, await response.json()) == (404, {"message": "no such order"})
    async with running.http.get(f"{url}/invalid") as response:
        assert (response.status, await response.json()) == (400, {"error": "name is required"})
    async with running.http.get(f"{url}/string") as response:
        assert response.status == 502
        assert await response.json() == {
            "error": "The action did not return a dictionary or array."
        }
    async with running.http.get(f"{url}/crash") as response:
        assert response.status == 500
    async with running.http.get(f"{url}?__ow_method=get") as response:
        assert response.status == 400
    async with running.http.options(
        f"{url}/echo", headers={"Access-Control-Request-Headers": "X-Agent"}
    ) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Headers"] == "X-Agent"

    _, data = await running.admin("GET", "/v1/functions/ow/activations?limit=50")
    by_status = {a["http_status"]: a["status"] for a in data["activations"]}
    assert by_status[200] == "success"
    assert all(by_status[s] != "success" for s in (400, 404, 500, 502))
    crash = next(a for a in data["activations"] if a["http_status"] == 500)
    assert "RuntimeError: boom" in crash["logs"]


RAW_ACTION = textwrap.dedent("""
    import base64

    def main(args):
        body = args["__ow_body"]
        if args["__ow_headers"].get("content-type", "").startswith("application/json"):
            body = base64.b64decode(body).decode()
        return {"query": args["__ow_query"], "text": body, "method": args["__ow_method"]}
""")


async def test_raw_web_actions(running: Running) -> None:
    deployed = await running.deploy_ok(
        "raw", RAW_ACTION, style="openwhisk", entry="main", style_options={"web": "raw"}
    )
    assert deployed["style_options"] == {"web": "raw"}
    async with running.http.put(
        f"{running.url}/fn/raw?name=Jane&x=1", data=b'{"name": "Body"}',
        headers={"Content-Type": "application/json"},
    ) as response:  # fmt: skip
        assert response.status == 200
        assert await response.json() == {
            "query": "name=Jane&x=1",
            "text": '{"name": "Body"}',
            "method": "put",
        }
    async with running.http.post(
        f"{running.url}/fn/raw", data=b"plain text", headers={"Content-Type": "text/plain"}
    ) as response:
        assert (await response.json())["text"] == "plain text"


RECORD_ACTION = textwrap.dedent("""
    import json
    import os

    def main(args):
        with open(os.environ["OUT"], "a") as f:
            f.write(json.dumps(args, sort_keys=True) + "\\n")
        return {"seen": sorted(args)}
""")


async def test_async_calls_and_topic_events(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "out"
    await running.deploy_ok(
        "rec",
        RECORD_ACTION,
        style="openwhisk",
        entry="main",
        env={"OUT": str(out), "OPENWHISK_PARAMS": orjson.dumps({"region": "eu"}).decode()},
    )
    # An HTTP call queued with Prefer: respond-async is still a web action call.
    accepted = await submit(running, "rec", {"n": 1})
    done = await wait_for_status(running, accepted["activation_id"], "succeeded")
    assert done["result"] == {"seen": ["__ow_headers", "__ow_method", "__ow_path", "n", "region"]}

    # A topic's event fires the action as a trigger would: the payload is its args.
    assert (await running.admin("PUT", "/v1/topics/orders"))[0] == 201
    status, _ = await running.admin("POST", "/v1/functions/rec/triggers", json={"topic": "orders"})
    assert status == 201
    status, _ = await running.admin("POST", "/v1/events/orders", json={"order": 7})
    assert status == 202
    status, _ = await running.admin(
        "POST", "/v1/events/orders", data=b"\x00\x01",
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert status == 202
    found = [orjson.loads(line) for line in await wait_for_lines(out, 3)]
    assert found[0]["n"] == 1
    events = sorted(found[1:], key=lambda args: "order" in args)
    assert events == [
        {"__ow_body": base64.b64encode(b"\x00\x01").decode(), "region": "eu"},
        {"order": 7, "region": "eu"},
    ]
