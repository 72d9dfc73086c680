"""The Lambda style in process: events built from calls, the context, the environment, and
results mapped back to HTTP (invoker/styles/aws_lambda.py, aws_events.py)."""

from __future__ import annotations

import base64
import os
import threading
import time
import types
from pathlib import Path
from typing import Any

import orjson
import pytest

from fn.cli.functions import _target
from invoker.context import Context
from invoker.styles import BindInfo, Bound, Incoming, Outgoing, StyleError, StyleMismatch, bind
from invoker.styles.aws_lambda import LambdaContext
from invoker.styles.detect import default_entry

ACTIVATION = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
LAMBDA_VARIABLES = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_EXECUTION_ENV",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
)


@pytest.fixture(autouse=True)
def lambda_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Binding sets Lambda's variables and working directory: both restored after a test."""
    for name in LAMBDA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def info(entry: str = "lambda_handler", **options: str) -> BindInfo:
    return BindInfo(
        style="lambda",
        entry=entry,
        module=types.ModuleType("app"),
        function="orders",
        version=3,
        memory_mb=256,
        timeout_s=30.0,
        options=options,
    )


def call(
    body: bytes = b"",
    *,
    method: str = "POST",
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "",
    source: str = "http",
    deadline_s: float = 30.0,
    **extra: str,
) -> Incoming:
    headers = headers if headers is not None else [("Host", "localhost:8080")]
    if content_type:
        headers = [*headers, ("Content-Type", content_type)]
    return Incoming(
        body=body,
        method=method,
        path=path,
        query=query,
        headers=headers,
        content_type=content_type,
        source=source,
        context=Context(
            function="orders",
            version=3,
            activation_id=ACTIVATION,
            deadline=time.monotonic() + deadline_s,
            method=method,
            path=path,
            query=query,
            headers=dict(headers),
        ),
        **extra,
    )


def run(bound: Bound, incoming: Incoming) -> Outgoing:
    assert not bound.is_async
    result: Outgoing = bound.run(incoming)
    return result


def capture(**options: str) -> tuple[Bound, list[tuple[Any, Any]]]:
    """A bound handler that records (event, context) and returns {"ok": True}."""
    seen: list[tuple[Any, Any]] = []

    def lambda_handler(event: Any, context: Any) -> Any:
        seen.append((event, context))
        return {"ok": True}

    return bind(lambda_handler, info(**options)), seen


def event_of(incoming: Incoming, **options: str) -> Any:
    bound, seen = capture(**options)
    run(bound, incoming)
    return seen[0][0]


def answer(result: Any, incoming: Incoming | None = None, **options: str) -> Outgoing:
    return run(bind(lambda event, context: result, info(**options)), incoming or call())


# -- binding --------------------------------------------------------------------------------


def test_a_handler_that_cannot_take_event_and_context_is_refused() -> None:
    def main(args: Any) -> Any:
        return args

    with pytest.raises(StyleMismatch, match=r"def main\(args.*not fit the lambda style.*--style"):
        bind(main, info("main"))
    with pytest.raises(StyleMismatch, match="lambda style"):
        bind(42, info())
    with pytest.raises(StyleError, match="'v3' is not one of v2, v1, alb, url"):
        bind(lambda event, context: None, info(event="v3"))


def test_a_deploy_that_names_the_style_but_not_the_handler_finds_lambda_handler(
    tmp_path: Path,
) -> None:
    module = types.ModuleType("app")
    module.lambda_handler = lambda event, context: None  # type: ignore[attr-defined]
    assert default_entry(module, "handler") == "lambda_handler"
    assert default_entry(module, "other") == "other"
    module.handler = lambda event, context: None  # type: ignore[attr-defined]
    assert default_entry(module, "handler") == "handler"
    # The CLI's --handler as Lambda writes it: the main module and the function.
    (tmp_path / "hello_world").mkdir()
    target = _target(tmp_path, "hello_world/app.lambda_handler", None, None, None, None)
    assert (target.style, target.entry, target.main) == (
        "auto",
        "lambda_handler",
        "hello_world/app.py",
    )
    target = _target(tmp_path, "app.lambda_handler", None, "lambda", None, None)
    assert (target.style, target.entry, target.main) == ("lambda", "lambda_handler", "app.py")


def test_binding_sets_lambdas_environment_without_overriding_the_functions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # as the function's --env would
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "999")
    package = tmp_path / "code" / "hello_world"
    package.mkdir(parents=True)
    module = types.ModuleType("hello_world.app")
    module.__file__ = str(package / "app.py")
    bound_info = BindInfo(
        style="lambda",
        entry="lambda_handler",
        module=module,
        function="orders",
        version=3,
        memory_mb=512,
        timeout_s=30.0,
    )
    seen: list[Any] = []
    run(bind(lambda event, context: seen.append(context), bound_info), call())
    assert os.environ["AWS_REGION"] == "eu-west-1"
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "999"
    assert os.environ["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
    assert os.environ["AWS_LAMBDA_FUNCTION_VERSION"] == "3"
    assert os.environ["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/orders"
    assert os.environ["_HANDLER"] == "hello_world.app.lambda_handler"
    assert os.environ["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
    # The code's root (not the package), which is also the working directory, as /var/task.
    root = str((tmp_path / "code").resolve())
    assert os.environ["LAMBDA_TASK_ROOT"] == root
    assert os.getcwd() == root
    assert seen[0].invoked_function_arn == "arn:aws:lambda:eu-west-1:000000000000:function:orders"


# -- the context ----------------------------------------------------------------------------


def test_the_context_has_lambdas_attributes_and_embers() -> None:
    bound, seen = capture()
    incoming = call(deadline_s=2.0)
    run(bound, incoming)
    context = seen[0][1]
    assert isinstance(context, LambdaContext)
    assert context.function_name == "orders"
    assert context.function_version == "3"
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:000000000000:function:orders"
    assert context.memory_limit_in_mb == "256"  # a string, as Lambda's runtime gives it
    assert context.aws_request_id == ACTIVATION
    assert context.log_group_name == "/aws/lambda/orders"
    assert context.log_stream_name.endswith(context.log_stream_name[-32:])
    assert "/[3]" in context.log_stream_name
    assert context.identity.cognito_identity_id is None
    assert context.identity.cognito_identity_pool_id is None
    assert context.client_context is None
    assert context.ember is incoming.context
    assert 1500 < context.get_remaining_time_in_millis() <= 2000
    assert "function_name=orders" in repr(context)
    assert os.environ["AWS_REGION"] == os.environ["AWS_DEFAULT_REGION"] == "us-east-1"


def test_each_call_has_its_own_remaining_time_under_concurrency() -> None:
    both = threading.Barrier(2)

    def lambda_handler(event: Any, context: Any) -> Any:
        both.wait(timeout=5)  # both calls in flight at once
        return context.get_remaining_time_in_millis()

    bound = bind(lambda_handler, info())
    results: dict[float, bytes] = {}

    def one(deadline_s: float) -> None:
        results[deadline_s] = run(bound, call(deadline_s=deadline_s))[2]

    threads = [threading.Thread(target=one, args=(s,)) for s in (5.0, 50.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 4000 < int(results[5.0]) <= 5000
    assert 49000 < int(results[50.0]) <= 50000
    late = run(bind(lambda e, c: c.get_remaining_time_in_millis(), info()), call(deadline_s=-1))
    assert late[2] == b"0"


# -- HTTP events ----------------------------------------------------------------------------

HEADERS = [
    ("Host", "localhost:8080"),
    ("User-Agent", "curl/8.5.0"),
    ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
    ("Accept", "text/html"),
    ("Accept", "application/json"),
    ("Cookie", "session=abc; theme=dark"),
    ("Cookie", "lang=en"),
]


def test_http_api_v2_event() -> None:
    event = event_of(
        call(
            b'{"a": 1}',
            method="PUT",
            path="/items/7",
            query="name=ann&tag=a&tag=b&flag&q=a%20b+c",
            headers=HEADERS,
            content_type="application/json",
        )
    )
    context = event.pop("requestContext")
    assert event == {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/items/7",
        "rawQueryString": "name=ann&tag=a&tag=b&flag&q=a%20b+c",
        "cookies": ["session=abc", "theme=dark", "lang=en"],
        "headers": {
            "host": "localhost:8080",
            "user-agent": "curl/8.5.0",
            "x-forwarded-for": "203.0.113.7, 10.0.0.1",
            "accept": "text/html,application/json",
            "content-type": "application/json",
        },
        "queryStringParameters": {"name": "ann", "tag": "a,b", "flag": "", "q": "a b c"},
        "body": '{"a": 1}',
        "pathParameters": {"proxy": "items/7"},
        "isBase64Encoded": False,
    }
    assert time.strptime(context.pop("time"), "%d/%b/%Y:%H:%M:%S +0000")
    assert abs(context.pop("timeEpoch") / 1000 - time.time()) < 5
    assert context == {
        "accountId": "000000000000",
        "apiId": "ember",
        "domainName": "localhost:8080",
        "domainPrefix": "localhost",
        "http": {
            "method": "PUT",
            "path": "/items/7",
            "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.7",
            "userAgent": "curl/8.5.0",
        },
        "requestId": ACTIVATION,
        "routeKey": "$default",
        "stage": "$default",
    }


def test_v2_leaves_out_what_the_request_has_none_of_and_base64_encodes_binary() -> None:
    event = event_of(call(method="GET", headers=[("Host", "fn.example.com")]))
    for absent in ("cookies", "queryStringParameters", "body", "pathParameters"):
        assert absent not in event
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["http"]["sourceIp"] == "unknown"
    assert event["requestContext"]["domainPrefix"] == "fn"

    png = b"\x89PNG\r\n\x1a\n\x00"
    event = event_of(call(png, content_type="image/png"))
    assert (event["body"], event["isBase64Encoded"]) == (base64.b64encode(png).decode(), True)
    # text/* and +json are text; so are a form and a body without a type when they decode.
    form = event_of(call(b"a=1", content_type="application/x-www-form-urlencoded"))
    assert (form["body"], form["isBase64Encoded"]) == ("a=1", False)
    upload = event_of(call(b"--b\r\n", content_type="multipart/form-data; boundary=b"))
    assert (upload["body"], upload["isBase64Encoded"]) == ("LS1iDQo=", True)
    assert event_of(call(b"<p>", content_type="text/html; charset=utf-8"))["body"] == "<p>"
    assert event_of(call(b"{}", content_type="application/vnd.api+json"))["body"] == "{}"
    assert event_of(call(b"plain"))["body"] == "plain"  # no Content-Type: text if it decodes
    assert event_of(call(b"\xff\xfe"))["isBase64Encoded"] is True


def test_function_url_event_is_v2_without_path_parameters() -> None:
    event = event_of(call(b"hi", path="/a/b", content_type="text/plain"), event="url")
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/a/b"
    assert "pathParameters" not in event
    assert event["requestContext"]["http"]["path"] == "/a/b"
    assert event["body"] == "hi"


def test_rest_api_v1_event() -> None:
    event = event_of(
        call(
            b"a=1&b=2",
            method="POST",
            path="/items/7",
            query="tag=a&tag=b&name=ann%20b",
            headers=HEADERS,
            content_type="application/x-www-form-urlencoded",
        ),
        event="v1",
    )
    context = event.pop("requestContext")
    assert event == {
        "resource": "/{proxy+}",
        "path": "/items/7",
        "httpMethod": "POST",
        "headers": {
            "Host": "localhost:8080",
            "User-Agent": "curl/8.5.0",
            "X-Forwarded-For": "203.0.113.7, 10.0.0.1",
            "Accept": "application/json",
            "Cookie": "lang=en",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        "multiValueHeaders": {
            "Host": ["localhost:8080"],
            "User-Agent": ["curl/8.5.0"],
            "X-Forwarded-For": ["203.0.113.7, 10.0.0.1"],
            "Accept": ["text/html", "application/json"],
            "Cookie": ["session=abc; theme=dark", "lang=en"],
            "Content-Type": ["application/x-www-form-urlencoded"],
        },
        "queryStringParameters": {"tag": "b", "name": "ann b"},
        "multiValueQueryStringParameters": {"tag": ["a", "b"], "name": ["ann b"]},
        "pathParameters": {"proxy": "items/7"},
        "stageVariables": None,
        "body": "a=1&b=2",
        "isBase64Encoded": False,
    }
    assert context["identity"]["sourceIp"] == "203.0.113.7"
    assert context["identity"]["userAgent"] == "curl/8.5.0"
    assert context["identity"]["cognitoIdentityId"] is None
    assert (context["requestId"], context["extendedRequestId"]) == (ACTIVATION, ACTIVATION)
    assert (context["httpMethod"], context["path"], context["stage"]) == (
        "POST",
        "/items/7",
        "$default",
    )
    assert context["resourcePath"] == "/{proxy+}"
    assert time.strptime(context["requestTime"], "%d/%b/%Y:%H:%M:%S +0000")
    assert isinstance(context["requestTimeEpoch"], int)

    root = event_of(call(method="GET"), event="v1")
    assert (root["resource"], root["pathParameters"], root["body"]) == ("/", None, None)
    assert root["queryStringParameters"] is None
    assert root["multiValueQueryStringParameters"] is None
    binary = event_of(call(b"\xff\x00", content_type="application/octet-stream"), event="v1")
    assert (binary["body"], binary["isBase64Encoded"]) == ("/wA=", True)


def test_alb_event() -> None:
    event = event_of(
        call(b"", method="GET", path="/x", query="a=1&a=2&b=c%20d", headers=HEADERS),
        event="alb",
    )
    assert event == {
        "requestContext": {
            "elb": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:"
                "targetgroup/orders/0000000000000000"
            }
        },
        "httpMethod": "GET",
        "path": "/x",
        "queryStringParameters": {"a": "2", "b": "c%20d"},  # as sent: not decoded
        "headers": {
            "host": "localhost:8080",
            "user-agent": "curl/8.5.0",
            "x-forwarded-for": "203.0.113.7, 10.0.0.1",
            "accept": "application/json",
            "cookie": "lang=en",
        },
        "body": "",
        "isBase64Encoded": False,
    }
    assert event_of(call(method="GET"), event="alb")["queryStringParameters"] == {}


def test_an_async_call_is_an_http_request_timed_when_it_was_submitted() -> None:
    event = event_of(
        call(
            b'{"n": 1}',
            content_type="application/json",
            source="async",
            event_id="e1",
            event_time="2024-03-12T19:03:58.123000+00:00",
        )
    )
    assert event["body"] == '{"n": 1}'
    assert event["requestContext"]["time"] == "12/Mar/2024:19:03:58 +0000"
    assert event["requestContext"]["timeEpoch"] == 1710270238123


# -- other events ---------------------------------------------------------------------------


def test_topic_and_table_events_are_their_payload() -> None:
    topic = call(b'{"order": 7}', content_type="application/json", source="topic", topic="t")
    assert event_of(topic) == {"order": 7}
    assert event_of(call(b"[1, 2]", source="table")) == [1, 2]
    assert event_of(call(b"", source="topic")) == {}
    assert event_of(call(b"hello", content_type="text/plain", source="topic")) == "hello"
    assert event_of(call(b"12", content_type="text/plain", source="topic")) == "12"
    assert event_of(call(b"\xff\x01", content_type="image/png", source="topic")) == "/wE="


def test_a_schedule_tick_is_an_eventbridge_scheduled_event() -> None:
    tick = orjson.dumps(
        {
            "trigger": 4,
            "cron": "*/5 * * * *",
            "timezone": "Europe/Paris",
            "scheduled_at": "2024-03-12T20:05:00+01:00",
            "missed": 0,
        }
    )
    event = event_of(call(tick, content_type="application/json", source="schedule", event_id="d-1"))
    assert event == {
        "version": "0",
        "id": "d-1",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2024-03-12T19:05:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/orders-schedule-4"],
        "detail": {},
    }
