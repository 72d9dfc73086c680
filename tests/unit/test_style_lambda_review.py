"""The Lambda style: what a hostile review of real handlers found (each failed before)."""

from __future__ import annotations

import base64
import os
import types
from pathlib import Path
from typing import Any

import orjson

from invoker.styles import BindInfo
from invoker.styles.aws_events import infer_event_kind
from invoker.styles.aws_lambda import bind
from invoker.styles.detect import detect_style
from tests.unit.test_style_lambda import (
    answer,
    call,
    info,
    lambda_environment,  # noqa: F401 (the autouse fixture: each test's environment restored)
    run,
)


def module_of(tmp_path: Path, source: str) -> types.ModuleType:
    path = tmp_path / "app.py"
    path.write_text(source)
    module = types.ModuleType("app")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def test_bytes_are_sent_as_their_text_as_lambdas_marshaller_sends_them() -> None:
    png = b"\x89PNG\r\n\x1a\nrest"
    status, _, body = answer(
        {
            "statusCode": 200,
            "isBase64Encoded": True,
            "headers": {"Content-Type": "image/png"},
            "body": base64.b64encode(png),  # bytes: no .decode(), as AWS's own samples write
        }
    )
    assert (status, body) == (200, png)
    assert answer({"data": b"hello"})[2] == b'{"data":"hello"}'


def test_a_list_of_header_values_is_one_header_each() -> None:
    _, headers, _ = answer({"statusCode": 200, "headers": {"Set-Cookie": ["a=1", "b=2"]}})
    assert [v for k, v in headers if k == "Set-Cookie"] == ["a=1", "b=2"]


def test_lambda_is_detected_from_lambdas_libraries_but_not_from_a_status_code_alone(
    tmp_path: Path,
) -> None:
    powertools = module_of(
        tmp_path,
        "try:\n    from aws_lambda_powertools import Logger\nexcept ImportError:\n    pass\n"
        "def handler(event, context):\n    return {}\n",
    )
    assert detect_style(powertools, "handler")[0] == "lambda"
    proxy = module_of(
        tmp_path,
        "def handler(event, context):\n    return {'statusCode': 200, 'body': 'hi'}\n",
    )
    assert detect_style(proxy, "handler")[0] == "lambda"
    native = module_of(
        tmp_path,
        "def handler(event, context):\n"
        "    return {'url': event['url'], 'statusCode': 200, 'by': context.function}\n",
    )
    assert detect_style(native, "handler")[0] == "ember"
    varargs = module_of(tmp_path, "def lambda_handler(event, *args):\n    return 1\n")
    assert detect_style(varargs, "handler")[0] == "lambda"


def test_a_module_that_touches_nothing_of_http_is_called_with_its_payload(
    tmp_path: Path,
) -> None:
    source = (
        "def lambda_handler(event, context):\n"
        "    return {'name': event['first_name'] + ' ' + event['last_name']}\n"
    )
    assert infer_event_kind(source) == "payload"
    assert infer_event_kind("def h(event, context):\n    return event['path']\n") == "v1"
    assert infer_event_kind("") == "v2"  # (no source to read)
    module = module_of(tmp_path, source)
    base = info()
    bound = bind(
        module.lambda_handler,
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
    assert bound.options == {"event": "payload"}  # stored with the version
    reply = run(
        bound, call(b'{"first_name": "Ada", "last_name": "L"}', content_type="application/json")
    )
    assert orjson.loads(reply[2]) == {"name": "Ada L"}


def test_the_request_id_is_the_same_on_every_attempt_of_a_delivery() -> None:
    seen: list[Any] = []
    bound = bind(lambda event, context: seen.append(context.aws_request_id), info())
    run(bound, call(source="async", event_id="0190-delivery"))
    run(bound, call())
    assert seen[0] == "0190-delivery"
    assert seen[1] != "0190-delivery"


def test_a_checked_instance_learns_its_version() -> None:
    bound = bind(lambda event, context: None, BindInfo(**{**_fields(info()), "version": 0}))
    assert os.environ["AWS_LAMBDA_FUNCTION_VERSION"] == "0"
    assert bound.relabel is not None
    bound.relabel(4)
    assert os.environ["AWS_LAMBDA_FUNCTION_VERSION"] == "4"
    assert "/[4]" in os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]


def _fields(bind_info: BindInfo) -> dict[str, Any]:
    return {name: getattr(bind_info, name) for name in BindInfo.__dataclass_fields__}
