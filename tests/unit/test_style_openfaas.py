"""The openfaas style in-process: python3-http's event and context and its index.py's
response formatting, the classic python3 / python3-flask `handle(req)` with Flask's ways of
making a response, the classic watchdog's environment, and events."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import os
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from invoker.context import Capture, Context, _ActivationStream, current_capture
from invoker.styles import BadRequest, BindInfo, Bound, Incoming, Outgoing, StyleMismatch, bind
from invoker.styles.detect import detect_style
from invoker.styles.flask_compat import flask_response, jsonify


@pytest.fixture(autouse=True)
def environ() -> Iterator[None]:
    """The classic template's Http_ variables go into os.environ: put it back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def module(source: str) -> types.ModuleType:
    mod = types.ModuleType("handler")
    exec(source, mod.__dict__)
    return mod


def bound(source: str, entry: str = "handle") -> Bound:
    mod = module(source)
    info = BindInfo(
        style="openfaas",
        entry=entry,
        module=mod,
        function="hello",
        version=1,
        memory_mb=256,
        timeout_s=30.0,
    )
    return bind(getattr(mod, entry), info)


def call(
    body: bytes = b"",
    *,
    content_type: str = "",
    method: str = "POST",
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    source: str = "http",
    topic: str = "",
) -> Incoming:
    all_headers = list(headers or [])
    if content_type:
        all_headers.append(("content-type", content_type))
    return Incoming(
        body=body,
        method=method,
        path=path,
        query=query,
        headers=all_headers,
        content_type=content_type,
        source=source,
        topic=topic,
        context=Context(
            function="hello", version=1, activation_id="a1", deadline=time.monotonic() + 30
        ),
    )


def run(b: Bound, incoming: Incoming) -> Outgoing:
    result: Outgoing = b.run(incoming)
    return result


def header(out: Outgoing, name: str) -> str | None:
    return next((v for k, v in out[1] if k.lower() == name.lower()), None)


HTML = "text/html; charset=utf-8"

# -- binding ---------------------------------------------------------------------------------


def test_both_handle_shapes_are_detected_as_openfaas() -> None:
    for source in ("def handle(event, context):\n    pass\n", "def handle(req):\n    pass\n"):
        style, entry, _ = detect_style(module(source), "handler")
        assert (style, entry) == ("openfaas", "handle")


def test_an_entry_point_that_fits_neither_template_is_refused() -> None:
    mod = module("def handle():\n    return 'x'\n")
    info = BindInfo(
        style="openfaas", entry="handle", module=mod, function="f", version=1, memory_mb=1,
        timeout_s=1.0,
    )  # fmt: skip
    with pytest.raises(StyleMismatch, match=r"def handle\(event, context\)"):
        bind(mod.handle, info)


def test_a_req_parameter_with_an_optional_second_is_the_classic_template() -> None:
    b = bound("def handle(req, extra=None):\n    return 'got ' + req\n")
    assert run(b, call(b"x"))[2] == b"got x"
    b = bound("def handle(event, context=None):\n    return {'body': event.method}\n")
    assert run(b, call(method="PUT"))[2] == b"PUT"


# -- python3-http: the event and context -----------------------------------------------------

EVENT = """
import json
def handle(event, context):
    return {"body": {
        "body": event.body.decode(), "method": event.method, "path": event.path,
        "query": event.query.to_dict(), "all": event.query.getlist("a"), "first": event.query["a"],
        "n": event.query.get("n", type=int), "missing": event.query.get("zz", "dflt"),
        "ct": event.headers.get("content-type"), "key": event.headers["X-API-KEY"],
        "has": "x-api-key" in event.headers, "headers": dict(event.headers),
        "pairs": [list(p) for p in event.headers], "host": context.hostname,
    }}
"""


def test_the_event_is_what_the_python3_http_template_builds() -> None:
    os.environ["HOSTNAME"] = "hello-7f9c"
    out = run(
        bound(EVENT),
        call(
            b'{"a": 1}',
            content_type="application/json",
            method="PATCH",
            path="/orders/7",
            query="a=1&a=2&n=5",
            headers=[("x-api-key", "k1"), ("Accept", "a"), ("accept", "b")],
        ),
    )
    assert (out[0], header(out, "Content-Type")) == (200, "application/json")
    assert out[2].endswith(b"}\n")
    got = orjson.loads(out[2])
    assert got == {
        "body": '{"a": 1}',
        "method": "PATCH",
        "path": "/orders/7",
        "query": {"a": "1", "n": "5"},
        "all": ["1", "2"],
        "first": "1",
        "n": 5,
        "missing": "dflt",
        "ct": "application/json",
        "key": "k1",
        "has": True,
        "headers": {"X-Api-Key": "k1", "Accept": "a, b", "Content-Type": "application/json"},
        "pairs": [["X-Api-Key", "k1"], ["Accept", "a, b"], ["Content-Type", "application/json"]],
        "host": "hello-7f9c",
    }
    assert list(got) == sorted(got)  # jsonify sorts keys


@pytest.mark.parametrize("expr", ["event.query['name']", "event.headers['X-Missing']"])
def test_a_missing_key_is_a_bad_request_as_in_flask(expr: str) -> None:
    b = bound(f"def handle(event, context):\n    return {{'body': {expr}}}\n")
    with pytest.raises(BadRequest, match="the request has no") as raised:
        run(b, call())
    assert isinstance(raised.value, KeyError)
    caught = bound(
        f"def handle(event, context):\n    try:\n        {expr}\n    except KeyError:\n"
        "        return {'body': 'caught'}\n"
    )
    assert run(caught, call())[2] == b"caught"


# -- python3-http: results as its index.py formats them --------------------------------------


def http(value: str) -> Outgoing:
    return run(bound(f"def handle(event, context):\n    return {value}\n"), call())


def test_none_is_an_empty_200() -> None:
    assert http("None") == (200, [["Content-Type", HTML]], b"")


def test_dict_results() -> None:
    out = http("{'statusCode': 201, 'body': {'b': 1, 'a': 'é'}, 'headers': {'X-Id': 7}}")
    assert (out[0], out[2], header(out, "X-Id")) == (201, '{"a":"é","b":1}\n'.encode(), "7")
    assert header(out, "Content-Type") == "application/json"
    assert http("{'body': 'hi'}")[::2] == (200, b"hi")
    assert http("{'statusCode': 404}") == (404, [["Content-Type", HTML]], b"")
    # What the template does with other bodies: str() of them.
    assert http("{'body': [1, 2]}")[2] == b"[1, 2]"
    assert http("{'body': 42, 'headers': {'Content-Type': 'text/plain'}}")[1:] == (
        [["Content-Type", "text/plain"]],
        b"42",
    )


def test_binary_bodies_go_as_they_are() -> None:
    out = http("{'body': b'\\x89PNG', 'headers': {'Content-type': 'image/png'}}")
    assert (out[2], header(out, "Content-Type")) == (b"\x89PNG", "image/png")
    octets = http("{'body': bytearray(b'\\x00\\x01'), 'statusCode': 200, "
                  "'headers': {'Content-type': 'application/octet-stream'}}")  # fmt: skip
    assert octets[2] == b"\x00\x01"


def test_other_results_are_made_responses_the_flask_way() -> None:
    assert http("'plain'") == (200, [["Content-Type", HTML]], b"plain")
    out = http("('created', 201, {'Location': '/x'})")
    assert (out[0], out[2], header(out, "Location")) == (201, b"created", "/x")


# -- Flask's make_response -------------------------------------------------------------------


def test_flask_tuples() -> None:
    assert flask_response(("x", 202)) == (202, [["Content-Type", HTML]], b"x")
    assert flask_response(("x", "201 CREATED"))[0] == 201
    assert flask_response(("x", {"Content-Type": "text/plain"}))[1] == [
        ["Content-Type", "text/plain"]
    ]
    out = flask_response(({"a": 1}, 400, [("X-A", "1"), ("X-A", "2")]))
    assert out == (
        400,
        [["Content-Type", "application/json"], ["X-A", "1"], ["X-A", "2"]],
        b'{"a":1}\n',
    )
    assert flask_response([1, "b"])[2] == b'[1,"b"]\n'
    assert flask_response(p for p in ("a", b"b"))[2] == b"ab"


@pytest.mark.parametrize("value", [(None, 200), 3, ("a", 2, {}, 4), ("x", 99), ("x", "abc")])
def test_what_flask_refuses_is_an_error(value: Any) -> None:
    with pytest.raises(TypeError):
        flask_response(value)


def test_a_response_object_is_used_as_it_is() -> None:
    class FakeResponse:
        status_code = 418
        headers = {"Content-Type": "text/plain", "X-T": "1"}

        def get_data(self) -> bytes:
            return b"short and stout"

    assert flask_response(FakeResponse()) == (
        418,
        [["Content-Type", "text/plain"], ["X-T", "1"]],
        b"short and stout",
    )


def test_jsonify_writes_what_flask_writes_for_other_types() -> None:
    value = {
        "d": dt.datetime(2024, 1, 2, 3, 4, 5),
        "n": decimal.Decimal("1.50"),
        "day": dt.date(2024, 1, 2),
    }
    assert orjson.loads(jsonify(value)) == {
        "d": "Tue, 02 Jan 2024 03:04:05 GMT",
        "day": "Tue, 02 Jan 2024 00:00:00 GMT",
        "n": "1.50",
    }
    with pytest.raises(TypeError, match="not JSON-serializable"):
        jsonify({"x": object()})


# -- handle(req): the classic python3 template and python3-flask -----------------------------


def test_req_is_the_body_as_text() -> None:
    b = bound("def handle(req):\n    return 'Hello ' + req\n")
    assert run(b, call(b"J\xc3\xa9 \xff")) == (
        200,
        [["Content-Type", HTML]],
        "Hello Jé \ufffd".encode(),
    )


def test_raw_body_gives_bytes() -> None:
    os.environ["RAW_BODY"] = "True"
    b = bound("def handle(req):\n    return req[::-1]\n")
    assert run(b, call(b"\x00\x01"))[2] == b"\x01\x00"


def test_classic_results() -> None:
    assert run(bound("def handle(req):\n    return {'n': len(req)}\n"), call(b"abc"))[2] == (
        b'{"n":3}\n'
    )
    out = run(bound("def handle(req):\n    return ('no', 403)\n"), call())
    assert out[::2] == (403, b"no")


def test_the_content_type_env_sets_every_response_type() -> None:
    os.environ["content_type"] = "application/json"  # noqa: SIM112 (the watchdog's name)
    out = run(bound("def handle(req):\n    return req\n"), call(b'{"a": 1}'))
    assert out == (200, [["Content-Type", "application/json"]], b'{"a": 1}')


@contextlib.contextmanager
def activation_logs() -> Iterator[Capture]:
    """stdout routed to the current activation's logs, as the runtime's install_capture does
    (inside the test: pytest swaps sys.stdout between a fixture's setup and the test)."""
    stdout = sys.stdout
    sys.stdout = _ActivationStream(stdout)
    logs = Capture()
    token = current_capture.set(logs)
    try:
        yield logs
    finally:
        current_capture.reset(token)
        sys.stdout = stdout


def test_printed_output_is_the_response_when_handle_returns_none() -> None:
    with activation_logs() as logs:
        b = bound("def handle(req):\n    print('Hi ' + req)\n")
        out = run(b, call(b"Ann", content_type="text/plain"))
        empty = run(bound("def handle(req):\n    pass\n"), call())
    assert out == (200, [["Content-Type", "text/plain"]], b"Hi Ann\n")
    assert logs.text() == ""
    assert empty[2] == b""


def test_printed_output_is_logged_when_handle_returns_a_value() -> None:
    with activation_logs() as logs:
        b = bound("def handle(req):\n    print('debug')\n    return 'ok'\n")
        assert run(b, call())[2] == b"ok"
        failing = bound("def handle(req):\n    print('before')\n    raise ValueError('x')\n")
        with pytest.raises(ValueError, match="x"):
            run(failing, call())
    assert logs.text() == "debug\nbefore\n"


def test_the_classic_watchdog_environment_is_set_per_call() -> None:
    source = (
        "import os\ndef handle(req):\n"
        "    return {k: v for k, v in os.environ.items() if k.startswith('Http_')}\n"
    )
    b = bound(source)
    first = orjson.loads(
        run(b, call(b"ab", method="GET", path="/p", query="q=1", headers=[("X-Trace", "t")]))[2]
    )
    assert first == {
        "Http_Method": "GET",
        "Http_Path": "/p",
        "Http_Query": "q=1",
        "Http_ContentLength": "2",
        "Http_X_Trace": "t",
    }
    second = orjson.loads(run(b, call(content_type="text/plain"))[2])
    assert second == {
        "Http_Method": "POST",
        "Http_Path": "/",
        "Http_ContentLength": "0",
        "Http_Content_Type": "text/plain",
    }


async def test_async_handlers() -> None:
    b = bound("async def handle(event, context):\n    return {'body': event.body}\n")
    assert b.is_async
    assert (await b.run(call(b"x")))[2] == b"x"
    c = bound("async def handle(req):\n    return req.upper()\n")
    assert (await c.run(call(b"x")))[2] == b"X"


# -- events ----------------------------------------------------------------------------------


def test_an_event_is_a_post_to_the_root_with_the_payload() -> None:
    source = (
        "def handle(event, context):\n    return {'body': {'m': event.method, 'p': event.path, "
        "'q': event.query.to_dict(), 't': event.headers.get('X-Topic'), "
        "'ct': event.headers.get('Content-Type'), 'b': event.body.decode()}}\n"
    )
    out = run(
        bound(source),
        call(b'{"n": 1}', content_type="application/json", source="topic", topic="orders"),
    )
    assert orjson.loads(out[2]) == {
        "m": "POST",
        "p": "/",
        "q": {},
        "t": "orders",
        "ct": "application/json",
        "b": '{"n": 1}',
    }
    classic = bound("def handle(req):\n    return 'got ' + req\n")
    assert run(classic, call(b"tick", source="schedule"))[2] == b"got tick"


# -- a function that uses Flask itself -------------------------------------------------------

FLASK_HANDLER = """
from flask import abort, jsonify, request

def handle(req):
    if request.args.get("q") == "none":
        abort(404)
    return jsonify(got=req, q=request.args.get("q"), agent=request.headers.get("X-Agent"),
                   path=request.path, method=request.method)
"""


def test_a_handler_that_imports_flask_runs_in_its_request_context() -> None:
    pytest.importorskip("flask")
    b = bound(FLASK_HANDLER)
    out = run(b, call(b"hi", method="PUT", path="/p", query="q=1", headers=[("X-Agent", "t")]))
    assert (out[0], header(out, "Content-Type")) == (200, "application/json")
    assert orjson.loads(out[2]) == {
        "got": "hi",
        "q": "1",
        "agent": "t",
        "path": "/p",
        "method": "PUT",
    }
    assert run(b, call(query="q=none"))[0] == 404
    http = bound(
        "from flask import request\ndef handle(event, context):\n"
        "    return {'body': request.args['q'] + event.query['q']}\n"
    )
    assert run(http, call(query="q=a"))[2] == b"aa"


def test_the_event_and_context_are_plain_objects_as_the_templates() -> None:
    source = """
def handle(event, context):
    return {"statusCode": 200, "body": {"event": sorted(vars(event)), "context": vars(context)}}
"""
    os.environ["HOSTNAME"] = "hello-7f9c"
    out = run(bound(source), call(b"{}"))
    assert out[0] == 200, out
    assert orjson.loads(out[2]) == {
        "event": ["body", "headers", "method", "path", "query"],
        "context": {"hostname": "hello-7f9c"},
    }
