"""The knative style in process: func-python's new()/handle contract, its CloudEvents variant
(with a stand-in for the CloudEvents SDK, which the platform does not install), the parliament
context, and events as binary-mode CloudEvents (invoker.styles.knative)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from invoker import styles
from invoker.context import Context
from invoker.runtime import Runtime
from invoker.styles import asgi, knative

Scope = dict[str, Any]


def module(directory: Path | str = "/srv/code", name: str = "func") -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__file__ = f"{directory}/{name.replace('.', '/')}.py"
    return mod


def info(entry: str = "new", mod: types.ModuleType | None = None, **kw: Any) -> styles.BindInfo:
    return styles.BindInfo(
        style="knative",
        entry=entry,
        module=mod or module(),
        function="greeter",
        version=1,
        memory_mb=128,
        timeout_s=30.0,
        **kw,
    )


def call(path: str = "/", body: bytes = b"", **kw: Any) -> styles.Incoming:
    kw.setdefault("headers", [("Host", "localhost:8080")])
    return styles.Incoming(
        body=body,
        path=path,
        context=Context(function="greeter", version=1, activation_id="a1", deadline=0.0),
        **kw,
    )


async def run(bound: styles.Bound, incoming: styles.Incoming) -> styles.Outgoing:
    result: styles.Outgoing = await bound.run(incoming)
    return result


class Function:
    """The shape of the func-python http template."""

    def __init__(self) -> None:
        self.config: dict[str, str] = {}
        self.stopped = False
        self.healthy: Any = None

    async def handle(self, scope: Scope, receive: Any, send: Any) -> None:
        message = await receive()
        seen = {
            "method": scope["method"],
            "path": scope["path"],
            "root_path": scope["root_path"],
            "query": scope["query_string"].decode(),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": message["body"].decode(),
            "greeting": self.config.get("GREETING"),
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [[b"content-type", b"application/json"]],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    def start(self, cfg: dict[str, str]) -> None:
        self.config = cfg

    def stop(self) -> None:
        self.stopped = True

    def alive(self) -> Any:
        return self.healthy if self.healthy is not None else (True, "Alive")


async def test_new_start_handle_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREETING", "hej")
    made: list[Function] = []

    def new() -> Function:
        made.append(Function())
        return made[-1]

    bound = knative.bind(new, info())
    assert len(made) == 1  # new() once, at bind
    assert bound.startup is not None
    await bound.startup()
    assert made[0].config["GREETING"] == "hej"
    assert made[0].config == dict(os.environ)  # the environment, as func-python passes it
    status, headers, body = await run(
        bound, call("/a/b", b"hi", method="PUT", query="x=1", content_type="text/plain")
    )
    seen = json.loads(body)
    assert (status, headers) == (200, [["content-type", "application/json"]])
    assert (seen["method"], seen["path"], seen["root_path"]) == ("PUT", "/a/b", "/fn/greeter")
    assert (seen["query"], seen["body"], seen["greeting"]) == ("x=1", "hi", "hej")
    runtime = Runtime()
    runtime.bound = bound
    await runtime.shut_down()
    assert made[0].stopped


async def test_health_endpoints_use_alive_and_ready() -> None:
    function = Function()
    bound = knative.bind(lambda: function, info())
    assert await run(bound, call("/health/liveness")) == (
        200,
        [["content-type", "text/plain"]],
        b"Alive",
    )
    assert (await run(bound, call("/health/readiness")))[::2] == (200, b"OK")  # no ready()
    function.healthy = (False, "database unreachable")
    assert (await run(bound, call("/health/liveness")))[::2] == (500, b"database unreachable")
    function.healthy = False
    assert (await run(bound, call("/health/liveness")))[::2] == (500, b"OK")


async def test_a_module_level_handle() -> None:
    async def handle(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    bound = knative.bind(handle, info("handle"))
    assert (await run(bound, call("/x")))[::2] == (202, b"/x")
    assert (await run(bound, call("/health/readiness")))[::2] == (200, b"OK")


async def test_an_event_is_a_binary_mode_cloudevent() -> None:
    bound = knative.bind(Function, info())
    out = await run(
        bound,
        call(
            "/",
            b'{"order": 7}',
            headers=[("X-Ember-Topic", "orders"), ("X-Ember-Delivery-Id", "d-1")],
            source="topic",
            topic="orders",
            event_id="d-1",
            event_time="2024-05-01T12:00:00.250000+00:00",
            content_type="application/json",
        ),
    )
    seen = json.loads(out[2])
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/", '{"order": 7}')
    assert {k: v for k, v in seen["headers"].items() if k.startswith("ce-")} == {
        "ce-specversion": "1.0",
        "ce-id": "d-1",
        "ce-source": "/ember/topics/orders",
        "ce-type": "dev.ember.topic.published",
        "ce-time": "2024-05-01T12:00:00.250000Z",
    }
    assert seen["headers"]["content-type"] == "application/json"
    schedule = call("/", b"", source="schedule", event_id="d-2", content_type="application/json")
    headers = dict(knative.event_headers(schedule, "greeter"))
    assert headers[b"ce-source"] == b"/ember/functions/greeter/schedule"
    assert headers[b"ce-type"] == b"dev.ember.schedule.fired"
    assert b"ce-time" not in headers


# ---- the CloudEvents template --------------------------------------------------------------


class Event:
    """Stands in for an SDK CloudEvent."""

    def __init__(self, attributes: Mapping[str, Any], data: Any) -> None:
        self.attributes, self.data = dict(attributes), data


def fake_sdk() -> knative.CloudEvents:
    def decode(headers: dict[str, str], body: bytes) -> Event:
        if "ce-id" not in headers:
            raise ValueError("missing required attribute: id")
        attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        return Event(attributes, json.loads(body))

    def structured(event: Event) -> tuple[dict[str, str], bytes]:
        document = {**event.attributes, "data": event.data}
        return {"content-type": "application/cloudevents+json"}, json.dumps(document).encode()

    def binary(event: Event) -> tuple[dict[str, str], bytes]:
        headers = {f"ce-{k}": str(v) for k, v in event.attributes.items()}
        return {**headers, "content-type": "application/json"}, json.dumps(event.data).encode()

    return knative.CloudEvents(decode=decode, structured=structured, binary=binary)


class EventFunction:
    """The shape of the func-python cloudevents template."""

    async def handle(self, scope: Scope, receive: Any, send: Any) -> None:
        request = scope["event"]
        reply = Event({"type": "reply", "source": "fn", "id": "r-" + request.attributes["id"]}, {})
        reply.data = {"got": request.data, "type": request.attributes["type"]}
        how = request.data.get("how")
        if how == "binary":
            await send.binary(reply)
        elif how == "raw":
            await send.http({"type": "http.response.start", "status": 204, "headers": []})
            await send.http({"type": "http.response.body", "body": b""})
        else:
            await send(reply)


@pytest.fixture
def with_sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    monkeypatch.setattr(knative, "_load_cloudevents", fake_sdk)
    (tmp_path / "func.yaml").write_text("specVersion: 0.36.0\nname: ev\ninvoke: cloudevent\n")
    (tmp_path / "function").mkdir()
    return module(tmp_path, "function.func")


async def test_cloudevents_in_and_out(with_sdk: types.ModuleType) -> None:
    bound = knative.bind(EventFunction, info(mod=with_sdk))
    ce = [("ce-id", "e1"), ("ce-source", "/test"), ("ce-type", "t.x"), ("ce-specversion", "1.0")]
    out = await run(bound, call("/", b'{"how": "structured"}', method="POST", headers=ce))
    assert out[:2] == (200, [["content-type", "application/cloudevents+json"]])
    assert json.loads(out[2])["data"] == {"got": {"how": "structured"}, "type": "t.x"}
    _, headers, body = await run(bound, call("/", b'{"how": "binary"}', headers=ce))
    assert ["ce-id", "r-e1"] in headers
    assert json.loads(body) == {"got": {"how": "binary"}, "type": "t.x"}
    assert (await run(bound, call("/", b'{"how": "raw"}', headers=ce)))[0] == 204
    # An Ember event becomes a CloudEvent the template reads like any other.
    event = call(
        "/", b'{"n": 1}', source="topic", topic="t", event_id="d9", content_type="application/json"
    )
    assert json.loads((await run(bound, event))[2])["data"]["type"] == "dev.ember.topic.published"
    with pytest.raises(styles.BadRequest, match=r"takes CloudEvents .* missing required"):
        await run(bound, call("/", b"{}", headers=[]))


def test_the_invoke_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "function").mkdir()
    nested = module(tmp_path, "function.func")
    assert knative.invoke_mode(info(mod=nested)) == "http"
    (tmp_path / "func.yaml").write_text("name: a\nruntime: python\n")  # no invoke: http
    monkeypatch.setitem(sys.modules, "cloudevents", types.ModuleType("cloudevents"))
    assert knative.invoke_mode(info(mod=nested)) == "http"
    (tmp_path / "func.yaml").write_text("name: a\ninvoke: 'cloudevent'\n")
    assert knative.invoke_mode(info(mod=nested)) == "cloudevent"
    (tmp_path / "func.yaml").unlink()
    assert knative.invoke_mode(info(mod=nested)) == "cloudevent"  # it imports the SDK
    assert knative.invoke_mode(info(mod=nested, options={"invoke": "http"})) == "http"


class Sender:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(message)


async def test_the_sender_passes_plain_asgi_messages() -> None:
    raw = Sender()
    sender = knative.CloudEventSender(raw, fake_sdk())
    await sender({"type": "http.response.start", "status": 200, "headers": []})
    await sender(Event({"id": "1"}, [1]), 201)
    assert raw.messages[0]["status"] == 200
    assert raw.messages[1]["status"] == 201
    assert raw.messages[1]["headers"] == [(b"content-type", b"application/cloudevents+json")]


# ---- what the entry point may be -----------------------------------------------------------


class NoHandle:
    def start(self, cfg: dict[str, str]) -> None:
        pass


@pytest.mark.parametrize(
    ("target", "said"),
    [
        (NoHandle, "new() returned a NoHandle with no handle method"),
        (lambda a, b, c, d: None, "does not fit the knative style"),
    ],
)
def test_entry_points_that_do_not_fit(target: Any, said: str) -> None:
    with pytest.raises(styles.StyleMismatch, match=re.escape(said)):
        knative.bind(target, info())


def test_parliament_context_reads_as_attributes_and_a_mapping() -> None:
    context = knative.ParliamentContext("request")
    assert (context.request, context["request"], list(context)) == (
        "request",
        "request",
        ["request"],
    )
    with pytest.raises(KeyError):
        context["cloud_event"]
    context.cloud_event = "event"
    assert dict(context) == {"request": "request", "cloud_event": "event"}
    assert "cloud_event" in context.keys()  # noqa: SIM118 (as the parliament template reads it)


def test_the_wsgi_environ_of_a_call() -> None:
    scope, body = asgi.http_scope(
        call(
            "/a b",
            b"xy",
            method="POST",
            query="q=1",
            headers=[("Host", "h:81"), ("Content-Type", "text/plain"), ("X-A", "1"), ("X-A", "2")],
        ),
        "/fn/greeter",
        "",
        None,
    )
    environ = knative.wsgi_environ(scope, body)
    assert environ["REQUEST_METHOD"] == "POST"
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/fn/greeter", "/a b")
    assert (environ["QUERY_STRING"], environ["SERVER_NAME"], environ["SERVER_PORT"]) == (
        "q=1",
        "h",
        "81",
    )
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("text/plain", "2")
    assert environ["HTTP_X_A"] == "1,2"
    assert environ["wsgi.input"].read() == b"xy"


async def test_the_added_overhead_is_small() -> None:
    bound = knative.bind(Function, info())
    incoming = call("/a", b"{}", headers=[("Host", "h"), ("Content-Type", "text/plain")] * 4)
    for _ in range(200):
        await bound.run(incoming)
    started = time.perf_counter()
    for _ in range(2000):
        await bound.run(incoming)
    assert (time.perf_counter() - started) * 1000 / 2000 < 0.1


@pytest.mark.parametrize(
    ("source", "requirements", "added"),
    [
        ("from parliament import Context", "", ["cloudevents<2", "parliament-functions"]),
        ("from cloudevents.http import CloudEvent, to_binary", "", ["cloudevents<2"]),
        ("from cloudevents.core.v1.event import CloudEvent", "", ["cloudevents"]),
        ("from cloudevents.http import CloudEvent", "cloudevents==1.9.0\n", []),
    ],
)
def test_the_cloudevents_sdk_a_deploy_adds(
    source: str, requirements: str, added: list[str]
) -> None:
    """parliament and the SDK's 1.x API need cloudevents < 2 (2 moved cloudevents.http)."""
    from gateway.frameworks import missing_packages

    assert missing_packages("knative", {"func.py": source}, requirements) == added
