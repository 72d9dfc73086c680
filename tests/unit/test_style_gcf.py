"""The gcf style in process: which kind of function an entry point is, HTTP functions with a
Flask request, CloudEvent functions, background functions and their events
(invoker/styles/gcf.py, gcf_events.py). Flask, cloudevents and functions-framework are the
functions' (a deploy installs them); tests needing one skip without it in the platform's venv,
and tests/integration/test_style_gcf.py covers them with them installed."""

from __future__ import annotations

import asyncio
import base64
import sys
import types
from typing import Any

import orjson
import pytest

from invoker.styles import BadRequest, BindInfo, Bound, Outgoing, StyleMismatch, bind
from invoker.styles.gcf import signature_type
from invoker.styles.gcf_events import Context
from tests.unit.test_style_wsgi import call

TIME = "2024-05-01T12:00:00.250000+00:00"


@pytest.fixture(autouse=True)
def no_signature_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNCTION_SIGNATURE_TYPE", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GCP_PROJECT", raising=False)


def gcf(function: Any, entry: str = "") -> Bound:
    return bind(
        function,
        BindInfo(
            style="gcf",
            entry=entry or function.__name__,
            module=types.ModuleType("main"),
            function="hello",
            version=1,
            memory_mb=256,
            timeout_s=60.0,
        ),
    )


def run(bound: Bound, **kwargs: Any) -> Outgoing:
    incoming = call(**kwargs)
    if bound.is_async:
        result: Outgoing = asyncio.run(bound.run(incoming))
        return result
    out: Outgoing = bound.run(incoming)
    return out


def event(source: str = "topic", body: bytes = b'{"n": 1}', topic: str = "orders") -> Any:
    incoming = call(body, method="POST", content_type="application/json", source=source)
    incoming.topic = topic if source == "topic" else ""
    incoming.event_id = "e-1"
    incoming.event_time = TIME
    return incoming


def test_the_kind_of_function(monkeypatch: pytest.MonkeyPatch) -> None:
    def hello_http(request: Any) -> str:
        return ""

    def hello_pubsub(event: Any, context: Any) -> None:
        pass

    def hello_cloud_event(cloud_event: Any) -> None:
        pass

    def annotated(e: CloudEvent) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    assert signature_type(hello_http, "hello_http") == ("http", "parameters")
    assert signature_type(hello_pubsub, "hello_pubsub") == ("event", "parameters")
    assert signature_type(hello_cloud_event, "x") == ("cloudevent", "parameters")
    assert signature_type(annotated, "annotated") == ("cloudevent", "parameters")
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "cloudevent")
    assert signature_type(hello_http, "hello_http") == ("cloudevent", "env")
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "pubsub")
    with pytest.raises(StyleMismatch, match="set it to http, cloudevent or event"):
        signature_type(hello_http, "hello_http")


def test_the_registry_of_functions_framework_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = types.ModuleType("functions_framework._function_registry")
    registry.REGISTRY_MAP = {"on_message": "cloudevent", "api": "http"}  # type: ignore[attr-defined]
    registry.ASGI_FUNCTIONS = {"api"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, registry.__name__, registry)

    def on_message(request: Any) -> None:
        pass

    async def api(request: Any) -> str:
        return ""

    assert signature_type(on_message, "on_message") == ("cloudevent", "registry")
    assert signature_type(api, "api") == ("http", "aio")
    with pytest.raises(StyleMismatch, match="async HTTP function"):
        gcf(api)

    from invoker.styles.detect import classify

    def odd_name(req: Any) -> None:
        pass

    assert classify("odd_name", odd_name) is None
    registry.REGISTRY_MAP["odd_name"] = "http"
    assert classify("odd_name", odd_name) == "gcf"


def test_a_function_that_fits_no_kind_is_refused() -> None:
    def three(a: Any, b: Any, c: Any) -> None:
        pass

    with pytest.raises(StyleMismatch, match=r"def three\(a, b, c\) does not fit the gcf style"):
        gcf(three)


# Background functions: no framework needed.


def test_a_background_function_gets_a_topic_event_as_a_pubsub_message() -> None:
    seen: list[tuple[Any, Context]] = []

    def hello_pubsub(event: Any, context: Any) -> None:
        seen.append((event, context))

    assert run(gcf(hello_pubsub), **{}) == (
        405,
        [["Allow", "POST"], ["Content-Type", "text/plain; charset=utf-8"]],
        b"an event function takes its events in POST requests",
    )
    status, _, body = gcf(hello_pubsub).run(event())
    assert (status, body) == (200, b"OK")
    data, context = seen[-1]
    assert data == {
        "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
        "data": base64.b64encode(b'{"n": 1}').decode(),
        "attributes": {},
    }
    assert context.event_id == "e-1"
    assert context.timestamp == "2024-05-01T12:00:00.250000Z"
    assert context.event_type == "google.pubsub.topic.publish"
    assert context.resource == {
        "service": "pubsub.googleapis.com",
        "name": "projects/ember/topics/orders",
        "type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
    }
    assert "event_id: e-1" in str(context)
    gcf(hello_pubsub).run(event("schedule", b'{"trigger": "nightly"}'))
    assert seen[-1][1].resource["name"] == "projects/ember/topics/ember.schedule"


def test_a_background_function_over_http() -> None:
    seen: list[tuple[Any, Context]] = []

    def on_event(data: Any, context: Any) -> None:
        seen.append((data, context))

    bound = gcf(on_event)

    def post(body: Any, **kwargs: Any) -> tuple[Any, Context]:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        kwargs.setdefault("content_type", "application/json")
        assert run(bound, body=raw, method="POST", **kwargs)[2] == b"OK"
        return seen[-1]

    data, context = post(
        {
            "data": {"name": "file.txt"},
            "context": {
                "eventId": "1",
                "timestamp": "t",
                "eventType": "google.storage.object.finalize",
                "resource": {"name": "projects/_/buckets/b"},
            },
        }
    )
    assert data == {"name": "file.txt"}
    assert (context.event_id, context.timestamp) == ("1", "t")
    assert context.event_type == "google.storage.object.finalize"
    assert context.resource == {"name": "projects/_/buckets/b"}

    data, context = post({"eventId": "2", "eventType": "x.y", "resource": "r", "data": [1]})
    assert (data, context.event_id, context.event_type, context.resource) == ([1], "2", "x.y", "r")

    push = {"subscription": "s", "message": {"data": "aGk=", "messageId": "9", "attributes": {}}}
    data, context = post(push, path="/projects/p/topics/t")
    assert data == {
        "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
        "data": "aGk=",
        "attributes": {},
    }
    assert (context.event_id, context.resource["name"]) == ("9", "projects/p/topics/t")

    data, context = post(
        {"message": {"data": "aGk=", "messageId": "3", "publishTime": "t3"}},
        headers=[
            ("ce-specversion", "1.0"),
            ("ce-id", "3"),
            ("ce-type", "google.cloud.pubsub.topic.v1.messagePublished"),
            ("ce-source", "//pubsub.googleapis.com/projects/p/topics/t"),
            ("ce-time", "t3"),
        ],
    )
    assert data == {"data": "aGk="}
    assert (context.event_id, context.event_type) == ("3", "google.pubsub.topic.publish")
    assert context.resource["name"] == "projects/p/topics/t"

    structured = {
        "specversion": "1.0",
        "id": "4",
        "type": "com.example.thing",
        "source": "//example/things",
        "subject": "t/1",
        "data": {"k": "v"},
    }
    data, context = post(structured, content_type="application/cloudevents+json")
    assert (data, context.event_type, context.resource) == (
        {"k": "v"},
        "com.example.thing",
        "//example/things/t/1",
    )

    with pytest.raises(BadRequest, match="takes a JSON event"):
        run(bound, body=b"not json", method="POST", content_type="text/plain")


def test_a_failing_background_function_fails_the_call() -> None:
    def broken(data: Any, context: Any) -> None:
        raise ValueError("bad order")

    with pytest.raises(ValueError, match="bad order"):
        gcf(broken).run(event())


# CloudEvent functions: cloudevents.


def test_cloud_events_in_binary_and_structured_mode_and_from_topics() -> None:
    pytest.importorskip("cloudevents")
    seen: list[Any] = []

    def on_event(cloud_event: Any) -> None:
        seen.append(cloud_event)

    bound = gcf(on_event)
    assert run(
        bound,
        body=b'{"n": 2}',
        method="POST",
        content_type="application/json",
        headers=[
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "//example/orders"),
            ("ce-type", "com.example.order.created"),
            ("ce-subject", "orders/2"),
        ],
    ) == (200, [["Content-Type", "text/plain; charset=utf-8"]], b"OK")
    got = seen[-1]
    assert (got["id"], got["type"], got["subject"], got.data) == (
        "b-1",
        "com.example.order.created",
        "orders/2",
        {"n": 2},
    )
    structured = {
        "specversion": "1.0",
        "id": "s-1",
        "source": "//example",
        "type": "t",
        "data": {"x": 1},
    }
    run(
        bound,
        body=orjson.dumps(structured),
        method="POST",
        content_type="application/cloudevents+json",
    )
    assert (seen[-1]["id"], seen[-1].data) == ("s-1", {"x": 1})

    assert bound.run(event())[2] == b"OK"
    got = seen[-1]
    assert got["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert got["source"] == "//pubsub.googleapis.com/projects/ember/topics/orders"
    assert (got["id"], got["time"]) == ("e-1", "2024-05-01T12:00:00.250000Z")
    assert base64.b64decode(got.data["message"]["data"]) == b'{"n": 1}'
    assert got.data["message"]["messageId"] == "e-1"
    assert got.data["subscription"] == "projects/ember/subscriptions/hello"

    with pytest.raises(BadRequest, match="not a CloudEvent"):
        run(bound, body=b'{"n": 1}', method="POST", content_type="application/json")
    assert run(bound, method="GET")[0] == 405


def test_async_cloud_event_functions_and_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cloudevents")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "shop-prod")
    seen: list[Any] = []

    async def on_event(cloud_event: Any) -> None:
        seen.append(cloud_event["source"])

    bound = gcf(on_event)
    assert bound.is_async
    assert run(bound, method="GET")[0] == 405
    asyncio.run(bound.run(event("table")))
    assert seen == ["//pubsub.googleapis.com/projects/shop-prod/topics/ember.table"]


# HTTP functions: Flask.


def test_http_functions_get_a_flask_request_and_return_what_flask_takes() -> None:
    flask = pytest.importorskip("flask")

    def hello_http(request: Any) -> Any:
        assert isinstance(request, flask.Request)  # the request itself, not a proxy
        name = (request.get_json(silent=True) or {}).get("name") or request.args.get("name")
        if name == "teapot":
            return "I'm a teapot", 418, {"X-Brew": "no"}
        if name == "json":
            return {"path": request.path, "method": request.method}
        if name == "redirect":
            return flask.redirect("/elsewhere")
        if name == "missing":
            flask.abort(404)
        if name == "crash":
            raise RuntimeError("crashed")
        return f"Hello {name or 'World'}!"

    bound = gcf(hello_http)
    assert run(bound)[2] == b"Hello World!"
    body = run(bound, body=b'{"name": "ada"}', method="POST", content_type="application/json")[2]
    assert body == b"Hello ada!"
    status, headers, body = run(bound, query="name=teapot")
    assert (status, ["X-Brew", "no"] in headers, body) == (418, True, b"I'm a teapot")
    assert orjson.loads(run(bound, query="name=json", path="/a/b", method="DELETE")[2]) == {
        "path": "/a/b",
        "method": "DELETE",
    }
    assert run(bound, query="name=redirect")[0] == 302
    assert run(bound, query="name=missing")[0] == 404
    assert run(bound, path="/robots.txt")[0] == 404
    assert run(bound, path="/favicon.ico")[0] == 404
    with pytest.raises(RuntimeError, match="crashed"):
        run(bound, query="name=crash")
    assert run(bound, body=b"payload", source="topic")[2] == b"Hello World!"


def test_a_cors_preflight_reaches_the_function() -> None:
    pytest.importorskip("flask")

    def cors(request: Any) -> Any:
        if request.method == "OPTIONS":
            return "", 204, {"Access-Control-Allow-Origin": "*", "Access-Control-Max-Age": "3600"}
        return "hello", 200, {"Access-Control-Allow-Origin": "*"}

    status, headers, body = run(gcf(cors), method="OPTIONS")
    assert (status, body) == (204, b"")
    assert ["Access-Control-Max-Age", "3600"] in headers
    assert run(gcf(cors), method="HEAD")[::2] == (200, b"")  # HEAD: the headers only


def test_decorated_functions_of_functions_framework() -> None:
    functions_framework = pytest.importorskip("functions_framework")

    def greet(req: Any) -> Any:
        return {"hi": req.args.get("who")}

    def on_thing(thing: Any) -> None:
        seen.append(thing["type"])

    http_function = functions_framework.http(greet)  # registered under its name
    cloud_event_function = functions_framework.cloud_event(on_thing)

    class Order:
        def __init__(self, n: int) -> None:
            self.n = n

        @staticmethod
        def from_dict(data: dict[str, Any]) -> Order:
            return Order(data["n"])

        def to_dict(self) -> dict[str, Any]:
            return {"n": self.n * 2}

    def double(order):  # type: ignore[no-untyped-def]  # (a string annotation would not do)
        return Order(order.n)

    typed_function = functions_framework.typed(Order)(double)

    seen: list[str] = []
    assert orjson.loads(run(gcf(http_function), query="who=ada")[2]) == {"hi": "ada"}
    gcf(cloud_event_function).run(event())
    assert seen == ["google.cloud.pubsub.topic.v1.messagePublished"]
    body = run(
        gcf(typed_function), body=b'{"n": 4}', method="POST", content_type="application/json"
    )[2]
    assert orjson.loads(body) == {"n": 8}
