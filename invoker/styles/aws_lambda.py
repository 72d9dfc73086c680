"""The AWS Lambda style: `lambda_handler(event, context)` run as Lambda's Python runtime runs it.

The event is what API Gateway, a load balancer or a function URL would send for the HTTP
request (invoker/styles/aws_events.py; `--lambda-event` chooses, else the fields the module
reads, else v2), or the payload of a topic, schedule or table event. The context is Lambda's
(`LambdaContext`), with Ember's own reachable as `context.ember`. At bind the function gets
Lambda's environment variables (those its `--env` does not set) and, as on Lambda, its working
directory is its code's root. A sync handler runs with no event loop running (as on Lambda,
where handlers call asyncio.run themselves).

What the handler returns is mapped to HTTP as the fronting service maps it:
- a proxy response (a dict with `statusCode`): its status, `headers` and `multiValueHeaders`
  (merged), `cookies` (one Set-Cookie each), `body` (`isBase64Encoded`: decoded); Content-Type
  application/json unless it sets one. ALB's `statusDescription` is ignored.
- anything else, as HTTP APIs and function URLs infer it: 200, application/json, the body a
  string as is, any other value as JSON. (A REST API or a load balancer would answer 502
  instead; Ember serves it the same way.)
For events, the result is the activation's result, as JSON (as for an async invoke).
A value JSON cannot encode is an error, as it is on Lambda (Runtime.MarshalError).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from invoker.context import Context
from invoker.styles import BindInfo, Bound, Incoming, Outgoing, StyleError, mismatch
from invoker.styles.aws_events import (
    ACCOUNT_ID,
    HTTP_EVENTS,
    NotRouted,
    Site,
    b64decode,
    event_of,
    infer_event_kind,
)
from invoker.styles.aws_routes import RoutesError, parse_routes
from invoker.styles.native import describe, takes

SIGNATURE = "def lambda_handler(event, context) (or async def)"
DEFAULT_REGION = "us-east-1"
"""The region in ARNs and AWS_REGION when the function's --env sets none."""
UNLIMITED_MEMORY_MB = 10240
"""memory_limit_in_mb of a function with no memory limit: Lambda's largest size."""


class CognitoIdentity:
    """`context.identity`: set on Lambda only for calls from the AWS Mobile SDK."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self) -> None:
        self.cognito_identity_id: str | None = None
        self.cognito_identity_pool_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class Facts:
    """What every call's context says of the function, fixed at bind."""

    __slots__ = (
        "arn",
        "log_group",
        "log_stream",
        "memory_mb",
        "name",
        "region",
        "set_by_us",
        "stream_id",
        "version",
    )

    def __init__(self, function: str, version: int, memory_mb: int, region: str) -> None:
        self.name = function
        self.region = region
        self.arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function}"
        self.memory_mb = str(memory_mb if memory_mb > 0 else UNLIMITED_MEMORY_MB)
        self.log_group = f"/aws/lambda/{function}"
        self.stream_id = uuid.uuid4().hex
        self.log_stream = ""
        self.version = version
        self.set_by_us: dict[str, str] = {}
        """The environment variables bound here (not the function's --env), with the value
        set: one the module changed since is its own."""
        self.relabel(version)

    def relabel(self, version: int) -> None:
        """The version in the log stream's name (an instance checked at deploy as version 0
        learns its number afterwards)."""
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self.version = version
        self.log_stream = f"{day}/[{version}]{self.stream_id}"


class LambdaContext:
    """The `context` of a Lambda handler: the attributes and methods of Lambda's Python
    runtime (memory_limit_in_mb is a string there too). One per call, so that
    get_remaining_time_in_millis() is the call's own under concurrency."""

    client_context: Any = None
    """(mobile apps) Lambda sets it only for the AWS Mobile SDK's calls."""
    tenant_id: str | None = None

    def __init__(self, facts: Facts, ember: Context, request_id: str = "") -> None:
        self.function_name = facts.name
        self.function_version = str(ember.version)
        self.invoked_function_arn = facts.arn
        self.memory_limit_in_mb = facts.memory_mb
        self.aws_request_id = request_id or ember.activation_id
        """The same on every attempt of an async call or event (as Lambda's retries keep it):
        the delivery's id, which the 202 of an async call returned; else the activation's."""
        self.log_group_name = facts.log_group
        self.log_stream_name = facts.log_stream
        self.identity = CognitoIdentity()
        self.ember = ember
        """Ember's own context: config, headers, remaining_s(), logger..."""

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the platform stops waiting for this call."""
        return max(0, int((self.ember.deadline - time.monotonic()) * 1000))

    def log(self, msg: object) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"client_context={self.client_context},identity={self.identity}])"
        )


# -- results --------------------------------------------------------------------------------


def _encode_default(value: Any) -> Any:
    """What Lambda's encoder takes beyond JSON's types: Decimal (DynamoDB's numbers), and
    bytes (as their UTF-8 text)."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value)) if value.is_finite() else None
    if isinstance(value, bytes | bytearray):  # Lambda's marshaller sends bytes as UTF-8 text
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise TypeError("bytes that are not UTF-8 text") from None
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def to_json(value: Any) -> bytes:
    """`value` as JSON, as Lambda's runtime would send it; TypeError says why it cannot be."""
    try:
        return orjson.dumps(value, default=_encode_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        try:  # what orjson refuses and Lambda takes: integers past 64 bits
            return json.dumps(value, default=_encode_default, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            pass
        raise TypeError(
            f"the handler returned a value that is not JSON-serializable ({exc}); Lambda "
            "fails on it too (Runtime.MarshalError): return dicts, lists, strings, numbers, "
            "booleans or None"
        ) from None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def _header(name: Any, value: Any) -> list[str]:
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise ValueError(
            f"the handler's response has a header named {name!r}, which is not a valid "
            "HTTP header name"
        )
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = value if isinstance(value, str) else str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(
            f"the handler's response header {name} has a line break in its value {text[:60]!r}"
        )
    return [name, text]


def _status(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        status = value
    elif (isinstance(value, str) and value.strip().isdigit()) or (
        isinstance(value, float) and value.is_integer()
    ):
        status = int(value)
    else:
        raise ValueError(
            f"the handler's response has statusCode {value!r}, which is not an HTTP status; "
            "return a number from 200 to 599"
        )
    if not 200 <= status <= 599:
        raise ValueError(
            f"the handler's response has statusCode {status}, outside 200-599; return a "
            "status from 200 to 599 (an error as 4xx or 5xx)"
        )
    return status


def _listed(values: Any) -> list[Any] | tuple[Any, ...]:
    return values if isinstance(values, list | tuple) else (values,)


def proxy_response(result: dict[str, Any]) -> Outgoing:
    """A proxy integration's response (a dict with statusCode) as HTTP."""
    status = _status(result["statusCode"])
    headers: list[list[str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise ValueError(
            "the handler's response has headers or multiValueHeaders that is not an object "
            f"of names and values: {(single if not isinstance(single, dict) else multi)!r}"
        )
    both = {str(k).lower(): k for k in multi} if multi else {}
    for name, value in single.items():
        if value is None:
            continue
        seen = both.get(str(name).lower())
        for one in _listed(value):  # (a list: one header per value)
            if seen is not None and one in _listed(multi[seen]):
                continue  # the same pair in both: once (API Gateway's merge)
            headers.append(_header(name, one))
    for name, values in multi.items():
        for value in _listed(values):
            if value is not None:
                headers.append(_header(name, value))
    cookies = result.get("cookies")
    if cookies:
        for cookie in _listed(cookies):
            headers.append(_header("Set-Cookie", cookie))
    body = result.get("body")
    if body is None:
        data = b""
    elif isinstance(body, str):
        encoded = result.get("isBase64Encoded")
        data = b64decode(body) if encoded is True or encoded == "true" else body.encode()
    elif isinstance(body, bytes | bytearray):  # sent by Lambda as its UTF-8 text
        encoded = result.get("isBase64Encoded")
        data = bytes(body)
        if encoded is True or encoded == "true":
            data = b64decode(data.decode("ascii", "replace"))
    else:  # API Gateway wants a string; a handler that returns an object means its JSON
        data = to_json(body)
    if not any(h[0].lower() == "content-type" for h in headers):
        headers.append(["Content-Type", "application/json"])
    return status, headers, data


_JSON_HEADERS = [["Content-Type", "application/json"]]


def http_result(result: Any) -> Outgoing:
    """What the handler returned for an HTTP request, as HTTP."""
    if isinstance(result, dict) and "statusCode" in result:
        return proxy_response(result)
    if isinstance(result, str):  # "body is the function's response": the string itself
        return 200, [h[:] for h in _JSON_HEADERS], result.encode()
    if isinstance(result, bytes | bytearray):
        return 200, [["Content-Type", "application/octet-stream"]], bytes(result)
    return 200, [h[:] for h in _JSON_HEADERS], to_json(result)


def event_result(result: Any) -> Outgoing:
    """What the handler returned for an event: the activation's result, as JSON."""
    if isinstance(result, bytes | bytearray):
        return 200, [["Content-Type", "application/octet-stream"]], bytes(result)
    return 200, [h[:] for h in _JSON_HEADERS], to_json(result)


# -- calling --------------------------------------------------------------------------------


class _ThreadLoop:
    """An event loop of a thread's own for sync handlers, closed when the thread ends."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        self.loop.close()


_threads = threading.local()


def call_outside_loop(handler: Any, event: Any, context: LambdaContext) -> Any:
    """Call a sync handler as Lambda does: with no event loop running in its thread (the
    instance's own is hidden for the call) and an idle one set as the thread's current loop,
    so that `asyncio.run(...)` and `asyncio.get_event_loop().run_until_complete(...)` (how
    Mangum and other adapters run async code) work."""
    own: _ThreadLoop | None = getattr(_threads, "own", None)
    if own is None or own.loop.is_closed():
        own = _threads.own = _ThreadLoop()
    running = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    asyncio.set_event_loop(own.loop)  # (again each call: asyncio.run() unsets it)
    try:
        return handler(event, context)
    finally:
        asyncio._set_running_loop(running)


# -- binding --------------------------------------------------------------------------------


def _task_root(module: Any) -> str | None:
    """The directory the function's code was unpacked in (the main module may be in a
    package: hello_world/app.py is hello_world.app)."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    depth = str(getattr(module, "__name__", "")).count(".")
    return str(Path(file).resolve().parents[depth])


def _source(module: Any) -> str:
    file = getattr(module, "__file__", None)
    try:
        return Path(file).read_text(errors="replace") if file else ""
    except OSError:
        return ""


_before_import: Facts | None = None
"""The facts of the environment set before the module was imported (`before_import`)."""


def before_import(
    function: str, version: int, memory_mb: int, module_name: str, entry: str, root: str
) -> Callable[[], None]:
    """Lambda's environment variables (those the function's --env does not set) before its
    module is imported, as Lambda has them before a function's init code runs (a boto3
    client made at import finds its region, Powertools its LAMBDA_TASK_ROOT). Returns what
    takes them back, for a module that turns out to be bound with another style."""
    global _before_import
    facts = _before_import = Facts(function, version, memory_mb, _region())
    _set(facts, module_name, entry, root)

    def undo() -> None:
        global _before_import
        for key, value in facts.set_by_us.items():
            if os.environ.get(key) == value:
                del os.environ[key]
        _before_import = None

    return undo


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def _set(facts: Facts, module_name: str, entry: str, root: str | None) -> None:
    values = {
        "AWS_REGION": facts.region,
        "AWS_DEFAULT_REGION": facts.region,
        "AWS_LAMBDA_FUNCTION_NAME": facts.name,
        "AWS_LAMBDA_FUNCTION_VERSION": str(facts.version),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": facts.memory_mb,
        "AWS_LAMBDA_LOG_GROUP_NAME": facts.log_group,
        "AWS_LAMBDA_LOG_STREAM_NAME": facts.log_stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
        "_HANDLER": f"{module_name}.{entry}",
    }
    if root is not None:
        values["LAMBDA_TASK_ROOT"] = root
    for key, value in values.items():
        ours = key in facts.set_by_us and os.environ.get(key) == facts.set_by_us[key]
        if ours or key not in os.environ:  # (ours: now with the module's name known)
            os.environ[key] = facts.set_by_us[key] = value


def prepare_environment(info: BindInfo) -> Facts:
    """Lambda's environment variables (not those the function's --env set) and working
    directory; the facts every call's context repeats. Those `before_import` set stay."""
    facts = _before_import
    if facts is None or facts.name != info.function:
        facts = Facts(info.function, info.version, info.memory_mb, _region())
    root = _task_root(info.module)
    _set(facts, getattr(info.module, "__name__", "handler"), info.entry, root)
    if root is not None:
        with contextlib.suppress(OSError):  # Lambda runs a function in its code's directory
            os.chdir(root)
    return facts


NOT_FOUND: Outgoing = (404, [["Content-Type", "application/json"]], b'{"message":"Not Found"}')
"""What API Gateway answers a path none of a function's routes takes."""


def bind(target: Any, info: BindInfo) -> Bound:
    if not callable(target) or not takes(target, 2):
        raise mismatch("lambda", describe(target, info.entry), SIGNATURE)
    kind = info.options.get("event") or infer_event_kind(_source(info.module))
    http = HTTP_EVENTS.get(kind)
    if http is None:
        raise StyleError(
            f"the lambda style's event {kind!r} is not one of {', '.join(HTTP_EVENTS)}; "
            "give one with --lambda-event"
        )
    try:
        routes = parse_routes(info.options.get("routes", ""))
    except RoutesError as exc:
        raise StyleError(f"the lambda style's routes option: {exc}") from None
    facts = prepare_environment(info)
    site = Site(function=info.function, region=facts.region, routes=routes)
    handler = target
    direct = kind == "payload"  # called as `aws lambda invoke` calls: the result is the reply

    def result_of(call: Incoming, result: Any) -> Outgoing:
        return event_result(result) if direct or call.is_event else http_result(result)

    def relabel(version: int) -> None:
        facts.relabel(version)
        for key, value in (
            ("AWS_LAMBDA_FUNCTION_VERSION", str(version)),
            ("AWS_LAMBDA_LOG_STREAM_NAME", facts.log_stream),
        ):
            if key in facts.set_by_us and os.environ.get(key) == facts.set_by_us[key]:
                os.environ[key] = facts.set_by_us[key] = value

    options = {"event": kind}

    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__  # an object whose __call__ is async
    ):

        async def run_async(call: Incoming) -> Outgoing:
            try:
                event = event_of(call, site, http)
            except NotRouted:
                return NOT_FOUND
            result = await handler(event, LambdaContext(facts, call.context, call.event_id))
            return result_of(call, result)

        return Bound(run=run_async, is_async=True, relabel=relabel, options=options)

    def run(call: Incoming) -> Outgoing:
        try:
            event = event_of(call, site, http)
        except NotRouted:
            return NOT_FOUND
        return result_of(
            call,
            call_outside_loop(handler, event, LambdaContext(facts, call.context, call.event_id)),
        )

    return Bound(run=run, is_async=False, relabel=relabel, options=options)
