"""The Lambda style in process: what a handler returns, mapped back to HTTP (proxy responses,
HTTP API's inference, events' JSON results), errors, async handlers."""

from __future__ import annotations

import asyncio
import base64
import time
from decimal import Decimal
from typing import Any

import pytest

from invoker.styles import bind
from tests.unit.test_style_lambda import (
    HEADERS,
    answer,
    call,
    info,
    lambda_environment,  # noqa: F401 (the autouse fixture: each test's environment restored)
    run,
)


def test_an_events_result_is_json() -> None:
    tick = call(b"{}", source="schedule")
    assert answer("done", tick) == (200, [["Content-Type", "application/json"]], b'"done"')
    assert answer(None, tick)[2] == b"null"
    # A proxy response from an event is just a result.
    assert answer({"statusCode": 500}, call(b"{}", source="topic"))[:2] == (
        200,
        [["Content-Type", "application/json"]],
    )


# -- responses ------------------------------------------------------------------------------


def test_a_proxy_response_is_mapped_to_http() -> None:
    status, headers, body = answer(
        {
            "statusCode": 201,
            "statusDescription": "201 Created",  # ALB's: ignored
            "headers": {"Content-Type": "text/html", "X-Count": 2, "X-Flag": True, "X-None": None},
            "multiValueHeaders": {"X-Multi": ["a", "b"]},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": "<p>hi</p>",
            "isBase64Encoded": False,
        }
    )
    assert status == 201
    assert headers == [
        ["Content-Type", "text/html"],
        ["X-Count", "2"],
        ["X-Flag", "true"],
        ["X-Multi", "a"],
        ["X-Multi", "b"],
        ["Set-Cookie", "a=1; Path=/"],
        ["Set-Cookie", "b=2"],
    ]
    assert body == b"<p>hi</p>"


def test_headers_and_multi_value_headers_merge_as_api_gateway_merges_them() -> None:
    _, headers, _ = answer(
        {
            "statusCode": 200,
            "headers": {"Set-Cookie": "a=1", "X-Same": "1"},
            "multiValueHeaders": {"Set-Cookie": ["b=2", "c=3"], "x-same": ["1"]},
        }
    )
    assert headers == [
        ["Set-Cookie", "a=1"],
        ["Set-Cookie", "b=2"],
        ["Set-Cookie", "c=3"],
        ["x-same", "1"],
        ["Content-Type", "application/json"],
    ]


def test_a_base64_body_is_decoded_and_the_status_may_be_a_string() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    status, headers, body = answer(
        {
            "statusCode": "200",
            "headers": {"Content-Type": "image/png"},
            "body": base64.b64encode(png).decode(),
            "isBase64Encoded": True,
        }
    )
    assert (status, headers, body) == (200, [["Content-Type", "image/png"]], png)
    assert answer({"statusCode": 404})[:3] == (404, [["Content-Type", "application/json"]], b"")
    assert answer({"statusCode": 200, "body": {"a": Decimal("1.5")}})[2] == b'{"a":1.5}'


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"statusCode": 42}, "statusCode 42, outside 200-599"),
        ({"statusCode": 700, "body": ""}, "statusCode 700, outside 200-599"),
        ({"statusCode": "OK"}, "statusCode 'OK', which is not an HTTP status"),
        ({"statusCode": True}, "statusCode True"),
        ({"statusCode": 200, "body": "abc", "isBase64Encoded": True}, "not valid base64"),
        ({"statusCode": 200, "headers": {"X-A": "a\r\nX-B: b"}}, "line break"),
        ({"statusCode": 200, "headers": {"Bad Name": "x"}}, "not a valid HTTP header name"),
        ({"statusCode": 200, "headers": ["X-A"]}, "not an object"),
    ],
)
def test_a_bad_proxy_response_is_an_error_that_says_what_is_wrong(
    response: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        answer(response)


def test_a_result_without_status_code_is_inferred_as_http_apis_infer_it() -> None:
    json_type = [["Content-Type", "application/json"]]
    assert answer({"hello": "world"}) == (200, json_type, b'{"hello":"world"}')
    assert answer("hello") == (200, json_type, b"hello")  # the string itself, not quoted
    assert answer(["hello", 3, True]) == (200, json_type, b'["hello",3,true]')
    assert answer(3.1) == (200, json_type, b"3.1")
    assert answer(None) == (200, json_type, b"null")
    assert answer({"n": Decimal("12"), 1: "int key"})[2] == b'{"n":12,"1":"int key"}'
    assert answer({"big": 2**70})[2] == b'{"big":1180591620717411303424}'
    assert answer(b"\x00raw") == (200, [["Content-Type", "application/octet-stream"]], b"\x00raw")
    for kind in ("v1", "alb", "url"):
        assert answer({"hello": "world"}, event=kind)[2] == b'{"hello":"world"}'


def test_a_result_json_cannot_encode_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"not JSON-serializable .*Runtime.MarshalError"):
        answer({"when": {1, 2}})


def test_the_handlers_exception_is_the_calls_error() -> None:
    def lambda_handler(event: Any, context: Any) -> Any:
        raise KeyError("queryStringParameters")

    with pytest.raises(KeyError, match="queryStringParameters"):
        run(bind(lambda_handler, info()), call())


async def test_an_async_handler_runs_on_the_loop() -> None:
    async def lambda_handler(event: Any, context: Any) -> Any:
        return {"statusCode": 202, "body": event["rawPath"] + context.aws_request_id[:4]}

    bound = bind(lambda_handler, info())
    assert bound.is_async
    assert await bound.run(call(path="/p")) == (
        202,
        [["Content-Type", "application/json"]],
        b"/p0190",
    )

    class Handler:
        async def __call__(self, event: Any, context: Any) -> Any:
            return "from an object"

    assert bind(Handler(), info()).is_async


def test_the_warm_call_overhead_is_small() -> None:
    """Not a benchmark (bench/ measures it): a guard against a per-call import or scan."""
    bound = bind(lambda event, context: {"statusCode": 200, "body": "ok"}, info())
    incoming = call(b'{"a": 1}', path="/a/b", query="x=1", headers=HEADERS)
    run(bound, incoming)
    started = time.perf_counter()
    for _ in range(1000):
        run(bound, incoming)
    per_call_ms = (time.perf_counter() - started) / 1000 * 1000
    assert per_call_ms < 0.2, per_call_ms


ASYNC_INSIDE = [
    # How handlers and adapters (Mangum) run async code from a sync handler on Lambda.
    lambda coroutine: asyncio.run(coroutine),
    lambda coroutine: asyncio.get_event_loop().run_until_complete(coroutine),
]


async def test_a_sync_handler_runs_with_no_event_loop_running() -> None:
    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    for runner in ASYNC_INSIDE * 2:
        bound = bind(lambda event, context, runner=runner: runner(work()), info())
        # As the runtime calls it at concurrency 1: inline, on the instance's running loop.
        assert run(bound, call())[2] == b"done"
        assert asyncio.get_running_loop() is not None  # (given back after the call)
        # And at higher concurrency: in a worker thread.
        result = await asyncio.get_running_loop().run_in_executor(None, run, bound, call())
        assert result[2] == b"done"

    def lambda_handler(event: Any, context: Any) -> Any:
        return asyncio.get_running_loop()

    with pytest.raises(RuntimeError, match="no running event loop"):
        run(bind(lambda_handler, info()), call())
