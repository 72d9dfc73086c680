"""The openwhisk style in-process: web action arguments, the activation's environment, results
mapped to HTTP as OpenWhisk's controller maps them, and trigger-like events."""

from __future__ import annotations

import base64
import os
import time
import types
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from invoker.context import Context
from invoker.styles import BadRequest, BindInfo, Bound, Incoming, Outgoing, StyleMismatch, bind
from invoker.styles.detect import detect_style


@pytest.fixture(autouse=True)
def environ() -> Iterator[None]:
    """The style writes the activation's __OW_ variables into os.environ: put it back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def module(source: str) -> types.ModuleType:
    mod = types.ModuleType("action")
    exec(source, mod.__dict__)
    return mod


def bound(source: str, entry: str = "main", **options: str) -> Bound:
    mod = module(source)
    info = BindInfo(
        style="openwhisk",
        entry=entry,
        module=mod,
        function="hello",
        version=3,
        memory_mb=256,
        timeout_s=30.0,
        options=options,
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
) -> Incoming:
    all_headers = list(headers or [])
    if content_type:
        all_headers.append(("Content-Type", content_type))
    return Incoming(
        body=body,
        method=method,
        path=path,
        query=query,
        headers=all_headers,
        content_type=content_type,
        source=source,
        context=Context(
            function="hello", version=3, activation_id="a1b2", deadline=time.monotonic() + 30
        ),
    )


def run(b: Bound, incoming: Incoming) -> Outgoing:
    result: Outgoing = b.run(incoming)
    return result


ECHO = "def main(args):\n    return {'args': args}\n"


def echo(incoming: Incoming, **options: str) -> dict[str, Any]:
    status, _, body = run(bound(ECHO, **options), incoming)
    assert status == 200, body
    args: dict[str, Any] = orjson.loads(body)["args"]
    return args


def header(out: Outgoing, name: str) -> str | None:
    return next((v for k, v in out[1] if k.lower() == name.lower()), None)


# -- binding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source", ["def main():\n    return {}\n", "def main(a, b, c):\n    return {}\n", "main = 3\n"]
)
def test_an_entry_point_that_cannot_take_args_is_refused(source: str) -> None:
    mod = module(source)
    info = BindInfo(
        style="openwhisk", entry="main", module=mod, function="f", version=1, memory_mb=1,
        timeout_s=1.0,
    )  # fmt: skip
    with pytest.raises(StyleMismatch, match=r"openwhisk style, which expects def main\(args\)"):
        bind(mod.main, info)


def test_detection_takes_main_args_for_openwhisk() -> None:
    mod = module(ECHO)
    style, entry, _ = detect_style(mod, "handler")
    assert (style, entry) == ("openwhisk", "main")


# -- web action arguments --------------------------------------------------------------------


def test_query_and_json_body_are_merged_body_last_with_the_http_context() -> None:
    args = echo(
        call(
            b'{"name": "Jane", "n": 2}',
            content_type="application/json",
            query="name=Query&q=1&empty",
            path="/a/b",
            headers=[("X-Api-Key", "k"), ("Accept", "*/*")],
        )
    )
    assert args == {
        "name": "Jane",
        "n": 2,
        "q": "1",
        "empty": "",
        "__ow_method": "post",
        "__ow_headers": {"x-api-key": "k", "accept": "*/*", "content-type": "application/json"},
        "__ow_path": "/a/b",
    }


def test_the_root_path_is_empty_and_get_has_no_body() -> None:
    args = echo(call(method="GET", query="a=1&a=2"))
    assert args == {"a": "2", "__ow_method": "get", "__ow_headers": {}, "__ow_path": ""}


def test_form_bodies_are_merged() -> None:
    args = echo(call(b"name=Jane&x=%C3%A9", content_type="application/x-www-form-urlencoded"))
    assert (args["name"], args["x"]) == ("Jane", "é")
    assert "__ow_body" not in args


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"[1, 2]", "application/json", [1, 2]),
        (b'"text"', "application/vnd.api+json", "text"),
        (b"Jane", "text/plain", "Jane"),
        (b"<a>x</a>", "application/xml", "<a>x</a>"),
        (b"\x89PNG\x00", "image/png", base64.b64encode(b"\x89PNG\x00").decode()),
        (b"raw", "", base64.b64encode(b"raw").decode()),
        (b"odd", "application/x-custom; charset=utf-8", "odd"),
    ],
)
def test_a_body_that_is_not_an_object_is_ow_body(
    body: bytes, content_type: str, expected: Any
) -> None:
    args = echo(call(body, content_type=content_type))
    assert args["__ow_body"] == expected


def test_invalid_json_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        run(bound(ECHO), call(b"{nope", content_type="application/json"))


@pytest.mark.parametrize(
    ("query", "body"),
    [("__ow_method=get", b"{}"), ("", b'{"__ow_headers": {}}'), ("__ow_body=x", b"")],
)
def test_a_request_may_not_set_reserved_parameters(query: str, body: bytes) -> None:
    with pytest.raises(BadRequest, match=r"sets '__ow_.*a reserved name"):
        run(bound(ECHO), call(body, content_type="application/json", query=query))


def test_default_parameters_come_first_and_are_final() -> None:
    os.environ["OPENWHISK_PARAMS"] = '{"greeting": "hi", "limit": 3}'
    b = bound(ECHO)
    status, _, body = run(b, call(query="name=Jane"))
    args = orjson.loads(body)["args"]
    assert (status, args["greeting"], args["limit"], args["name"]) == (200, "hi", 3, "Jane")
    with pytest.raises(BadRequest, match=r"'greeting', a default parameter \(OPENWHISK_PARAMS"):
        run(b, call(query="greeting=yo"))


@pytest.mark.parametrize("value", ["{nope", "[1]"])
def test_default_parameters_must_be_a_json_object(value: str) -> None:
    os.environ["OPENWHISK_PARAMS"] = value
    with pytest.raises(ValueError, match="OPENWHISK_PARAMS"):
        bound(ECHO)


def test_raw_web_actions_get_the_query_string_and_the_body() -> None:
    args = echo(
        call(b'{"name":"Jane"}', content_type="application/json", query="name=Q&x=1"),
        web="raw",
    )
    assert args["__ow_query"] == "name=Q&x=1"
    assert base64.b64decode(args["__ow_body"]) == b'{"name":"Jane"}'
    assert "name" not in args
    text = echo(call(b"a=1", content_type="application/x-www-form-urlencoded"), web="raw")
    assert (text["__ow_body"], text["__ow_query"]) == ("a=1", "")
    assert echo(call(method="GET"), web="raw")["__ow_body"] == ""
    binary = echo(call(b"\x00\x01", content_type="application/octet-stream"), web="raw")
    assert binary["__ow_body"] == "AAE="


# -- the activation's environment ------------------------------------------------------------

ENVIRON = """
import os
def main(args):
    return {k: v for k, v in os.environ.items() if k.startswith("__OW_")}
"""


def test_the_activation_environment_is_set_per_call() -> None:
    before = time.time() * 1000
    status, _, body = run(bound(ENVIRON), call())
    env = orjson.loads(body)
    assert status == 200
    assert env["__OW_ACTIVATION_ID"] == "a1b2"
    assert env["__OW_TRANSACTION_ID"] == "a1b2"
    assert env["__OW_NAMESPACE"] == "guest"
    assert env["__OW_ACTION_NAME"] == "/guest/hello"
    assert env["__OW_ACTION_VERSION"] == "0.0.3"
    assert before + 29_000 < int(env["__OW_DEADLINE"]) < before + 31_000
    assert (env["__OW_API_HOST"], env["__OW_API_KEY"]) == ("", "")


def test_a_namespace_and_api_host_from_the_functions_environment_are_kept() -> None:
    os.environ["__OW_NAMESPACE"] = "acme_dev"
    os.environ["__OW_API_HOST"] = "https://ow.example.com"
    _, _, body = run(bound(ENVIRON), call())
    env = orjson.loads(body)
    assert env["__OW_ACTION_NAME"] == "/acme_dev/hello"
    assert env["__OW_API_HOST"] == "https://ow.example.com"


# -- results ---------------------------------------------------------------------------------


def result_of(value: str, incoming: Incoming | None = None) -> Outgoing:
    return run(bound(f"def main(args):\n    return {value}\n"), incoming or call())


def test_a_plain_dict_or_list_is_json() -> None:
    status, headers, body = result_of("{'greeting': 'hi', 'n': [1]}")
    assert (status, orjson.loads(body)) == (200, {"greeting": "hi", "n": [1]})
    assert ["Content-Type", "application/json"] in headers
    assert result_of("[1, 2]")[::2] == (200, b"[1,2]")


@pytest.mark.parametrize("value", ["'hello'", "None", "3"])
def test_anything_else_is_a_502_as_the_runtime_answers(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, body = result_of(value)
    assert status == 502
    assert orjson.loads(body) == {"error": "The action did not return a dictionary or array."}
    assert "The action's result: a " in capsys.readouterr().err


def test_http_responses_default_to_html_text() -> None:
    out = result_of("{'body': '<h1>hi</h1>', 'headers': {'Set-Cookie': ['a=1', 'b=2'], 'X-N': 2}}")
    assert (out[0], out[2]) == (200, b"<h1>hi</h1>")
    assert header(out, "Content-Type") == "text/html; charset=UTF-8"
    assert [v for k, v in out[1] if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert header(out, "X-N") == "2"


def test_a_redirect_without_a_body() -> None:
    out = result_of("{'statusCode': 302, 'headers': {'location': '/x', 'Content-Type': 'a/b'}}")
    assert (out[0], header(out, "location"), header(out, "content-type"), out[2]) == (
        302,
        "/x",
        None,
        b"",
    )
    assert result_of("{'headers': {'X': 'y'}}")[0] == 204
    assert result_of("{'statusCode': '201', 'body': ''}")[0] == 201


def test_a_binary_content_type_decodes_a_base64_body() -> None:
    png = base64.b64encode(b"\x89PNG\r\n").decode()
    out = result_of(f"{{'headers': {{'Content-Type': 'image/png'}}, 'body': '{png}'}}")
    assert (out[0], out[2], header(out, "Content-Type")) == (200, b"\x89PNG\r\n", "image/png")
    # Not base64 at all: passed through (OpenWhisk would refuse it).
    svg = result_of("{'headers': {'Content-Type': 'image/svg+xml'}, 'body': '<svg/>'}")
    assert svg[2] == b"<svg/>"


def test_json_bodies() -> None:
    out = result_of("{'statusCode': 201, 'body': {'a': [1, 2]}}")
    assert (out[0], orjson.loads(out[2]), header(out, "Content-Type")) == (
        201,
        {"a": [1, 2]},
        "application/json",
    )
    encoded = base64.b64encode(b'{"a": 1}').decode()
    legacy = result_of(
        f"{{'headers': {{'Content-Type': 'application/json'}}, 'body': '{encoded}'}}"
    )
    assert legacy[2] == b'{"a": 1}'
    plain = result_of("{'headers': {'Content-Type': 'application/json'}, 'body': '{\"a\": 1}'}")
    assert plain[2] == b'{"a": 1}'
    looks_like_base64 = result_of(
        "{'headers': {'Content-Type': 'application/json'}, 'body': 'true'}"
    )
    assert looks_like_base64[2] == b"true"


@pytest.mark.parametrize(
    "value",
    [
        "{'statusCode': 'teapot', 'body': 'x'}",
        "{'statusCode': 99, 'body': 'x'}",
        "{'headers': 'x: y', 'body': 'x'}",
        "{'headers': {'x': {'y': 1}}, 'body': 'x'}",
    ],
)
def test_an_invalid_http_response_is_a_502(value: str) -> None:
    status, _, body = result_of(value)
    assert (status, orjson.loads(body)) == (502, {"error": "Response is not valid 'message/http'."})


def test_application_errors() -> None:
    status, _, body = result_of("{'error': 'missing name'}")
    assert (status, orjson.loads(body)) == (400, {"error": "missing name"})
    status, _, body = result_of("{'error': {'code': 7}}")
    assert (status, orjson.loads(body)) == (400, {"error": {"code": 7}})
    out = result_of("{'error': {'statusCode': 404, 'body': 'no such order'}, 'body': 'ignored'}")
    assert (out[0], out[2]) == (404, b"no such order")
    assert result_of("{'error': {'body': 'bad'}}")[0] == 400


def test_cors_headers_and_preflight() -> None:
    out = result_of("{'headers': {'Access-Control-Allow-Origin': 'https://a.example'}}")
    assert header(out, "Access-Control-Allow-Origin") == "https://a.example"
    assert header(out, "Access-Control-Allow-Methods") is not None
    b = bound("def main(args):\n    raise AssertionError('a preflight runs no action')\n")
    pre = run(b, call(method="OPTIONS", headers=[("Access-Control-Request-Headers", "X-A")]))
    assert (pre[0], pre[2], header(pre, "Access-Control-Allow-Headers")) == (200, b"", "X-A")


async def test_async_actions() -> None:
    b = bound("async def main(args):\n    return {'got': args.get('x')}\n")
    assert b.is_async
    status, _, body = await b.run(call(query="x=1"))
    assert (status, orjson.loads(body)) == (200, {"got": "1"})


# -- events ----------------------------------------------------------------------------------


def test_an_event_object_is_the_args_as_trigger_parameters() -> None:
    os.environ["OPENWHISK_PARAMS"] = '{"region": "eu", "n": 0}'
    out = run(bound(ECHO), call(b'{"n": 1}', content_type="application/json", source="topic"))
    assert orjson.loads(out[2]) == {"args": {"region": "eu", "n": 1}}
    assert header(out, "Access-Control-Allow-Origin") is None


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"[1]", "application/json", [1]),
        (b"hi", "text/plain", "hi"),
        (b"\x00", "application/octet-stream", "AA=="),
    ],
)
def test_an_event_that_is_not_an_object_is_ow_body(
    body: bytes, content_type: str, expected: Any
) -> None:
    args = echo(call(body, content_type=content_type, source="schedule"))
    assert args == {"__ow_body": expected}
