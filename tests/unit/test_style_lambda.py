"""The Lambda style in process: binding (refusals, Lambda's environment, which event a handler
gets), the context; and the helpers the other test_style_lambda_* modules share."""

from __future__ import annotations

import os
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from fn.cli.functions import _target
from invoker.context import Context
from invoker.styles import BindInfo, Bound, Incoming, Outgoing, StyleError, StyleMismatch, bind
from invoker.styles.aws_events import infer_event_kind
from invoker.styles.aws_lambda import LambdaContext
from invoker.styles.detect import default_entry, detect_style

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
        monkeypatch.setenv(name, "")  # (recorded, so that what binding sets is undone too)
        monkeypatch.delenv(name)
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


PEER = "192.0.2.10"
"""The client's address as the gateway saw it (X-Forwarded-For, which callers write, differs)."""


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
    client: str = PEER,
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
        client=client,
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
        "lambda",  # (Lambda's notation: the lambda style)
        "lambda_handler",
        "hello_world/app.py",
    )
    target = _target(tmp_path, "app.lambda_handler", None, "lambda", None, None)
    assert (target.style, target.entry, target.main) == ("lambda", "lambda_handler", "app.py")


def test_a_handler_of_another_name_is_lambda_when_its_module_uses_lambdas_fields(
    tmp_path: Path,
) -> None:
    def module_of(source: str) -> types.ModuleType:
        (tmp_path / "handler.py").write_text(source)
        module = types.ModuleType("handler")
        module.__file__ = str(tmp_path / "handler.py")
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        return module

    serverless = module_of(  # the Serverless Framework's template, in its shape
        "import json\n\n"
        "def hello(event, context):\n"
        "    body = {'message': 'ok', 'input': event}\n"
        "    return {'statusCode': 200, 'body': json.dumps(body)}\n"
    )
    assert detect_style(serverless, "hello")[0] == "lambda"
    uses_context = module_of("def hello(event, context):\n    return context.aws_request_id\n")
    assert detect_style(uses_context, "hello")[0] == "lambda"
    native = module_of("def handler(event, context):\n    return {'hello': event['name']}\n")
    assert detect_style(native, "handler")[0] == "ember"


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


HEADERS = [
    ("Host", "localhost:8080"),
    ("User-Agent", "curl/8.5.0"),
    ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
    ("Accept", "text/html"),
    ("Accept", "application/json"),
    ("Cookie", "session=abc; theme=dark"),
    ("Cookie", "lang=en"),
]


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("def lambda_handler(event, context):\n    return {'statusCode': 200}\n", "v2"),
        ("method = event['httpMethod']\n", "v1"),
        ('ids = event["multiValueQueryStringParameters"]["id"]\n', "v1"),
        ("app = APIGatewayRestResolver()\n", "v1"),
        ("method = event.get('httpMethod') or event['requestContext']['http']['method']", "v2"),
        ("path = event['rawPath']\n", "v2"),
        ("app = APIGatewayHttpResolver()\n", "v2"),
        ("def f(event: APIGatewayProxyEventV2): ...\n", "v2"),
        ("arn = event['requestContext']['elb']['targetGroupArn']\n", "alb"),
        ("return {'statusCode': 200, 'statusDescription': '200 OK', 'httpMethod': 1}", "alb"),
        ("app = LambdaFunctionUrlResolver()\n", "url"),
        ("handler = Mangum(app)\n", "v2"),
        # a WSGI adapter reads the event for the module: API Gateway's v1, which all take
        ("import awsgi\ndef lambda_handler(e, c):\n    return awsgi.response(app, e, c)", "v1"),
        ("import serverless_wsgi\nhandle = serverless_wsgi.handle_request", "v1"),
        ("from apig_wsgi import make_lambda_handler\n", "v1"),
    ],
)
def test_without_lambda_event_the_event_is_the_one_the_handler_reads(
    source: str, kind: str
) -> None:
    assert infer_event_kind(source) == kind


def test_a_module_that_reads_v1_fields_gets_v1_events(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "def lambda_handler(event, context):\n    event['httpMethod']\n"
    )
    module = types.ModuleType("app")
    module.__file__ = str(tmp_path / "app.py")
    seen: list[Any] = []
    base = info()
    bound = bind(
        lambda event, context: seen.append(event),
        BindInfo(
            style="lambda",
            entry="lambda_handler",
            module=module,
            function=base.function,
            version=base.version,
            memory_mb=base.memory_mb,
            timeout_s=base.timeout_s,
        ),
    )
    run(bound, call(method="GET"))
    assert seen[0]["httpMethod"] == "GET"
    bound = bind(lambda event, context: seen.append(event), info(event="v2"))
    run(bound, call(method="GET"))
    assert "httpMethod" not in seen[1]
