"""OpenFaaS functions deployed unchanged: python3-http's handle(event, context) and the classic
python3 / python3-flask handle(req), over HTTP through the gateway, with an async delivery and
a topic event, against real Postgres and invoker processes (no Flask installed)."""

from __future__ import annotations

import base64
import io
import json
import textwrap
import zipfile
from pathlib import Path

from tests.conftest import Running, shared
from tests.integration.test_events import submit, wait_for_lines, wait_for_status

# A python3-http handler in the shape the template documents.
HTTP_HANDLER = textwrap.dedent("""
    import json

    def handle(event, context):
        if event.path == "/echo":
            return {
                "statusCode": 200,
                "body": {
                    "method": event.method,
                    "query": event.query.to_dict(),
                    "tags": event.query.getlist("tag"),
                    "agent": event.headers.get("X-Agent"),
                    "json": json.loads(event.body) if event.body else None,
                    "host": context.hostname,
                },
            }
        if event.path == "/bytes":
            return {
                "statusCode": 200,
                "body": bytes(range(4)),
                "headers": {"Content-type": "application/octet-stream"},
            }
        if event.path == "/created":
            return {"statusCode": 201, "body": "made", "headers": {"Location": "/things/1"}}
        if event.path == "/nothing":
            return None
        if event.path == "/need":
            return {"body": event.query["name"]}
        if event.path == "/fail":
            raise ValueError("bad input")
        return {"statusCode": 404, "body": "no route " + event.path}
""")


async def test_python3_http_handlers(running: Running) -> None:
    deployed = await running.deploy_ok("faas", HTTP_HANDLER)
    assert (deployed["style"], deployed["handler"]) == ("openfaas", "handle")
    assert deployed["added_requirements"] == []
    url = f"{running.url}/fn/faas"

    async with running.http.put(
        f"{url}/echo?tag=a&tag=b&x=1", json={"n": 1}, headers={"X-Agent": "t"}
    ) as response:
        assert (response.status, response.headers["Content-Type"]) == (200, "application/json")
        echoed = await response.json()
    assert echoed == {
        "method": "PUT",
        "query": {"tag": "a", "x": "1"},
        "tags": ["a", "b"],
        "agent": "t",
        "json": {"n": 1},
        "host": echoed["host"],
    }
    assert echoed["host"]

    async with running.http.get(f"{url}/bytes") as response:
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.read() == b"\x00\x01\x02\x03"
    async with running.http.post(f"{url}/created") as response:
        assert (response.status, response.headers["Location"]) == (201, "/things/1")
        assert await response.text() == "made"
    async with running.http.get(f"{url}/nothing") as response:
        assert (response.status, await response.read()) == (200, b"")
    async with running.http.get(f"{url}/elsewhere") as response:
        assert (response.status, await response.text()) == (404, "no route /elsewhere")
    async with running.http.get(f"{url}/need?name=Ann") as response:
        assert (response.status, await response.text()) == (200, "Ann")
    async with running.http.get(f"{url}/need") as response:
        assert response.status == 400
        assert "no query parameter 'name'" in (await response.json())["error"]["message"]
    async with running.http.post(f"{url}/fail") as response:
        assert response.status == 500

    _, data = await running.admin("GET", "/v1/functions/faas/activations?limit=50")
    failed = [a for a in data["activations"] if a["http_status"] >= 400]
    assert {a["http_status"] for a in failed} == {400, 404, 500}
    assert all(a["status"] != "success" for a in failed)
    assert any("ValueError: bad input" in a["logs"] for a in failed)


CLASSIC = textwrap.dedent("""
    import os
    from urllib.parse import parse_qs

    def handle(req):
        query = parse_qs(os.getenv("Http_Query", ""))
        if os.getenv("Http_Path") == "/shout":
            return req.upper() + "!"
        if os.getenv("Http_Path") == "/print":
            print("Hello, " + req)
            return None
        if not req:
            return "give me a name", 400
        return {"hello": req, "lang": query.get("lang", ["en"])[0]}
""")


async def test_classic_and_flask_handlers(running: Running) -> None:
    deployed = await running.deploy_ok("classic", CLASSIC)
    assert (deployed["style"], deployed["handler"]) == ("openfaas", "handle")
    url = f"{running.url}/fn/classic"
    async with running.http.post(f"{url}?lang=fr", data="Anne") as response:
        assert (response.status, await response.json()) == (200, {"hello": "Anne", "lang": "fr"})
    async with running.http.post(f"{url}/shout", data="hey") as response:
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert await response.text() == "HEY!"
    async with running.http.post(
        f"{url}/print", data="Bo", headers={"Content-Type": "text/plain"}
    ) as response:
        assert (response.status, await response.text()) == (200, "Hello, Bo\n")
        assert response.headers["Content-Type"] == "text/plain"
    async with running.http.post(url) as response:
        assert (response.status, await response.text()) == (400, "give me a name")

    # python3-flask's RAW_BODY and the watchdog's content_type, from the function's env.
    raw = "def handle(req):\n    return req[::-1]\n"
    await running.deploy_ok(
        "rawbody", raw, env={"RAW_BODY": "true", "content_type": "application/octet-stream"}
    )
    async with running.http.post(f"{running.url}/fn/rawbody", data=b"\xff\x00") as response:
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.read() == b"\x00\xff"


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


async def test_a_handler_that_imports_its_siblings_relatively(running: Running) -> None:
    """OpenFaaS imports handler.py as function.handler: `from .pricing import ...` works."""
    files = {
        "handler.py": "from .pricing import total\n\n"
        "def handle(event, context):\n"
        "    return {'statusCode': 200, 'body': {'total': total([1, 2, 3])}}\n",
        "pricing.py": "def total(values):\n    return sum(values)\n",
    }
    await running.deploy_ok("orders", files["handler.py"], archive=zipped(files))
    async with running.http.get(f"{running.url}/fn/orders") as response:
        assert (response.status, await response.json()) == (200, {"total": 6})


RECORDER = textwrap.dedent("""
    import json
    import os

    def handle(event, context):
        record = {"method": event.method, "path": event.path, "topic": event.headers.get("X-Topic"),
                  "body": event.body.decode()}
        with open(os.environ["OUT"], "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\\n")
        return {"statusCode": 200, "body": record}
""")


async def test_async_calls_and_topic_events(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "out"
    await running.deploy_ok(
        "rec", RECORDER, style="openfaas", entry="handle", env={"OUT": str(out)}
    )
    accepted = await submit(running, "rec", {"n": 1})
    done = await wait_for_status(running, accepted["activation_id"], "succeeded")
    assert done["result"] == {"method": "POST", "path": "/", "topic": None, "body": '{"n": 1}'}

    assert (await running.admin("PUT", "/v1/topics/orders"))[0] == 201
    status, _ = await running.admin("POST", "/v1/functions/rec/triggers", json={"topic": "orders"})
    assert status == 201
    status, _ = await running.admin("POST", "/v1/events/orders", json={"order": 7})
    assert status == 202
    event = json.loads((await wait_for_lines(out, 2))[1])
    assert json.loads(event.pop("body")) == {"order": 7}
    assert event == {"method": "POST", "path": "/", "topic": "orders"}


FLASK_HANDLER = textwrap.dedent("""
    from flask import abort, jsonify, request

    def handle(req):
        if not req:
            abort(400)
        return jsonify(echo=req, lang=request.args.get("lang", "en"))
""")


async def test_a_python3_flask_handler_that_uses_flask(running: Running) -> None:
    """Flask is added to its requirements (OpenFaaS's template provides it), and each call
    runs in Flask's request context."""
    deployed = await running.deploy_ok("flasky", FLASK_HANDLER)
    assert (deployed["style"], deployed["added_requirements"]) == ("openfaas", ["flask"])
    async with running.http.post(f"{running.url}/fn/flasky?lang=fr", data="salut") as response:
        assert (response.status, await response.json()) == (200, {"echo": "salut", "lang": "fr"})
    async with running.http.post(f"{running.url}/fn/flasky") as response:
        assert response.status == 400
