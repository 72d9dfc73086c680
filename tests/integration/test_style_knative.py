"""Knative functions deployed unchanged, through the gateway: the func-python http and
cloudevents templates' shapes, and a parliament main(context) (real Postgres, real invokers;
the CloudEvents SDK and Flask installed from the package index, one environment for both)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Running, shared
from tests.integration.test_style_asgi import publish, submit_async, wait_done, wait_lines

pytestmark = pytest.mark.timeout(300)

HTTP_TEMPLATE = textwrap.dedent("""
    import json, logging

    def new():
        return Function()

    class Function:
        def __init__(self):
            self.cfg = {}

        async def handle(self, scope, receive, send):
            body = (await receive())["body"]
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            if scope["method"] == "POST" and "ce-id" in headers:
                with open(self.cfg["OUT"], "a") as f:
                    ce = {k: v for k, v in headers.items() if k.startswith("ce-")}
                    f.write(json.dumps({"ce": ce, "data": body.decode()}, sort_keys=True) + "\\n")
            logging.info("OK: Request Received")
            reply = {"path": scope["path"], "method": scope["method"],
                     "query": scope["query_string"].decode(), "body": body.decode(),
                     "greeting": self.cfg.get("GREETING")}
            await send({"type": "http.response.start", "status": 200,
                        "headers": [[b"content-type", b"application/json"]]})
            await send({"type": "http.response.body", "body": json.dumps(reply).encode()})

        def start(self, cfg):
            self.cfg = cfg

        def alive(self):
            return True, "Alive"

        def ready(self):
            return False, "warming up"
""")


async def test_the_http_template(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "events"
    deployed = await running.deploy_ok(
        "kn-http", HTTP_TEMPLATE, env={"GREETING": "hej", "OUT": str(out)}
    )
    assert (deployed["style"], deployed["handler"], deployed["style_detected"]) == (
        "knative",
        "new",
        True,
    )
    url = f"{running.url}/fn/kn-http"
    async with running.http.patch(f"{url}/a/b?x=1", data=b"payload") as response:
        assert response.status == 200
        assert await response.json() == {
            "path": "/a/b",
            "method": "PATCH",
            "query": "x=1",
            "body": "payload",
            "greeting": "hej",  # start(cfg) got the environment
        }
    async with running.http.get(f"{url}/health/liveness") as response:
        assert (response.status, await response.text()) == (200, "Alive")
    async with running.http.get(f"{url}/health/readiness") as response:
        assert (response.status, await response.text()) == (500, "warming up")

    done = await wait_done(running, await submit_async(running, "kn-http/later", data=b"x"))
    assert done["status"] == "succeeded", done
    assert done["result"]["path"] == "/later"

    await publish(running, "kn-http", "signups", {"user": "ann"})
    (line,) = await wait_lines(out, 1)
    assert '"data": "{\\"user\\": \\"ann\\"}"' in line
    assert '"ce-source": "/ember/topics/signups"' in line
    assert '"ce-type": "dev.ember.topic.published"' in line
    assert '"ce-specversion": "1.0"' in line


CLOUDEVENTS_FUNC = textwrap.dedent("""
    import logging
    from cloudevents.core.v1.event import CloudEvent

    def new():
        return Function()

    class Function:
        async def handle(self, scope, receive, send):
            request = scope["event"]
            logging.info("Request Received %s", request.get_id())
            response = CloudEvent(
                attributes={"type": "function.response", "source": "function",
                            "id": f"response-{request.get_id()}"},
                data={"message": "OK", "got": request.get_data(), "type": request.get_type()},
            )
            await send(response)
""")

PARLIAMENT_FUNC = textwrap.dedent("""
    def main(context):
        if context.cloud_event is not None:
            event = context.cloud_event
            return {"type": event["type"], "data": event.data}, 202
        request = context["request"]
        if request.method == "GET":
            return "hello " + request.args.get("name", "world"), 200, {"X-Greeting": "yes"}
        return {"json": request.get_json(), "path": request.path}
""")


def _zip(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


async def test_the_cloudevents_template_and_parliament(running: Running) -> None:
    requirements = "cloudevents\nflask\n"  # both functions: one environment, built once
    files = {
        "func.yaml": "specVersion: 0.36.0\nname: kn-events\nruntime: python\ninvoke: cloudevent\n",
        "function/__init__.py": "from .func import new\n",
        "function/func.py": CLOUDEVENTS_FUNC,
    }
    deployed = await running.deploy_ok(
        "kn-events",
        CLOUDEVENTS_FUNC,
        filename="function/func.py",
        archive=_zip(files),
        requirements=requirements,
    )
    assert deployed["style"] == "knative"
    ce_headers = {
        "ce-id": "e-1",
        "ce-source": "/test",
        "ce-type": "com.example.ping",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    url = f"{running.url}/fn/kn-events"
    async with running.http.post(url, data=b'{"n": 1}', headers=ce_headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/cloudevents+json"
        event = await response.json()
    assert (event["id"], event["type"]) == ("response-e-1", "function.response")
    assert event["data"] == {"message": "OK", "got": {"n": 1}, "type": "com.example.ping"}
    structured = {"specversion": "1.0", "id": "e-2", "source": "/s", "type": "t", "data": [1]}
    async with running.http.post(
        url, json=structured, headers={"Content-Type": "application/cloudevents+json"}
    ) as response:
        assert (await response.json())["data"]["got"] == [1]
    async with running.http.post(url, json={"not": "an event"}) as response:
        assert response.status == 400
        assert "takes CloudEvents" in (await response.json())["error"]["message"]

    await publish(running, "kn-events", "pings", {"n": 2})
    deadline = time.monotonic() + 30
    while True:
        _, listed = await running.admin("GET", "/v1/functions/kn-events/activations")
        logs = [a["logs"] for a in listed["activations"] if a["status"] == "success"]
        if len(logs) == 3:
            break
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.05)
    ids = {match[1] for text in logs if (match := re.search(r"Request Received (\S+)", text))}
    assert len(ids) == 3  # e-1, e-2 and the event's delivery id
    assert {"e-1", "e-2"} < ids

    deployed = await running.deploy_ok(
        "kn-parliament", PARLIAMENT_FUNC, style="knative", entry="main", requirements=requirements
    )
    assert deployed["environment"]
    url = f"{running.url}/fn/kn-parliament"
    async with running.http.get(f"{url}?name=ann") as response:
        assert (response.status, response.headers["X-Greeting"]) == (200, "yes")
        assert await response.text() == "hello ann"
    async with running.http.post(f"{url}/sub", json={"k": 1}) as response:
        assert await response.json() == {"json": {"k": 1}, "path": "/sub"}
    async with running.http.post(url, data=b'{"n": 3}', headers=ce_headers) as response:
        assert response.status == 202
        assert await response.json() == {"type": "com.example.ping", "data": {"n": 3}}
