"""OpenFaaS's Python templates, without needing Flask in the function's environment.

python3-http, python3-http-debian: `handle(event, context)`. `event` has body (bytes), headers
(case-insensitive, like Flask's request.headers), method, query (like request.args: .get,
.getlist, .to_dict) and path (the sub-path); `context.hostname`. The result, as the template's
index.py formats it: None is an empty 200; a dict gives statusCode (200), headers and body (a
dict body is JSON, bytes or an application/octet-stream body go as they are, anything else as
str(body)); any other value is made a response the way Flask makes one.

python3 (classic watchdog), python3-flask: `handle(req)`, req the body as text (bytes when the
function's env sets RAW_BODY=true, as python3-flask reads it). The return value is the body,
made a response the way Flask does: str or bytes (text/html), dict or list (JSON, as jsonify),
(body, status), (body, headers) or (body, status, headers). None: what the handler printed, as
the classic watchdog answers with the function's output, else an empty 200. The classic
watchdog's environment is set for each call (Http_Method, Http_Path, Http_Query and a
Http_<Header> for each header), and its `content_type` env, when set, is the Content-Type of
every response.

An event (topic, schedule, table) is a POST to "/" whose body is the payload (with X-Topic for
a topic's events, as OpenFaaS connectors send). When the function's code imports Flask itself,
each call runs in Flask's request context (flask.request, jsonify, abort work as under the
templates).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from invoker.context import Capture, current_capture
from invoker.styles import BindInfo, Bound, Incoming, Outgoing, mismatch
from invoker.styles.flask_compat import HTML, FlaskRequests, Headers, Query, flask_response
from invoker.styles.native import describe, positional_arity, takes

SIGNATURE = "def handle(event, context) (python3-http) or def handle(req) (python3, python3-flask)"

_CLASSIC_FIRST = ("req", "request", "body", "data", "payload")
_MAX_OUTPUT_BYTES = 64 << 20


class Event:
    """What python3-http's handle(event, context) gets: plain objects, as the template's
    (`vars(event)`, `context.__dict__` work; no `__slots__`)."""

    def __init__(self, call: Incoming) -> None:
        self.body: bytes = call.body
        self.headers = Headers(_headers(call))
        self.method: str = "POST" if call.is_event else call.method
        self.query = Query("" if call.is_event else call.query)
        self.path: str = "/" if call.is_event else call.path


class Context:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname


def _headers(call: Incoming) -> list[tuple[str, str]]:
    headers = list(call.headers)
    if call.content_type and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", call.content_type))
    if call.topic:
        headers.append(("X-Topic", call.topic))
    return headers


def _is_true(value: str) -> bool:
    return value.lower() == "true" or value == "1"


def bind(target: Any, info: BindInfo) -> Bound:
    if not callable(target):
        raise mismatch("openfaas", describe(target, info.entry), SIGNATURE)
    arity = positional_arity(target)
    required = arity[0] if arity else 0
    first = _first_param(target)
    flask = FlaskRequests.loaded()
    requests = None if flask is None else FlaskRequests(flask, info.function)
    if takes(target, 2) and (required >= 2 or first not in _CLASSIC_FIRST):
        return _bind_http(target, requests)
    if takes(target, 1):
        return _bind_classic(target, requests)
    raise mismatch("openfaas", describe(target, info.entry), SIGNATURE)


def _invoker(handler: Any, requests: FlaskRequests | None) -> Callable[..., Any]:
    """`invoke(call, *args)`: the handler, inside Flask's request context when its code uses
    Flask."""
    if requests is not None:
        wrap = requests.wrap_async if inspect.iscoroutinefunction(handler) else requests.wrap
        return wrap(handler)
    return lambda call, *args: handler(*args)


def _first_param(target: Any) -> str:
    try:
        params = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return ""
    return params[0] if params else ""


def _bind_http(handler: Any, requests: FlaskRequests | None) -> Bound:
    context = Context(os.environ.get("HOSTNAME", "localhost"))
    invoke = _invoker(handler, requests)
    if inspect.iscoroutinefunction(handler):

        async def run_async(call: Incoming) -> Outgoing:
            return http_result(await invoke(call, Event(call), context))

        return Bound(run=run_async, is_async=True)

    def run(call: Incoming) -> Outgoing:
        return http_result(invoke(call, Event(call), context))

    return Bound(run=run, is_async=False)


def _bind_classic(handler: Any, requests: FlaskRequests | None) -> Bound:
    as_bytes = _is_true(os.environ.get("RAW_BODY", "false"))
    forced_type = os.environ.get("content_type", "")  # noqa: SIM112 (the watchdog's name)
    cgi = _CgiEnv()
    invoke = _invoker(handler, requests)

    def request(call: Incoming) -> str | bytes:
        cgi.set(call)
        return call.body if as_bytes else call.body.decode("utf-8", "replace")

    def respond(result: Any, output: Capture, call: Incoming) -> Outgoing:
        if result is None:  # the classic watchdog: the output, typed as the request was
            ctype = call.content_type or "text/plain; charset=utf-8"
            outgoing: Outgoing = (200, [["Content-Type", ctype]], output.text().encode())
        else:
            _forward(output)
            outgoing = flask_response(result)
        if forced_type:
            status, headers, body = outgoing
            headers = [h for h in headers if h[0].lower() != "content-type"]
            outgoing = status, [*headers, ["Content-Type", forced_type]], body
        return outgoing

    if inspect.iscoroutinefunction(handler):

        async def run_async(call: Incoming) -> Outgoing:
            output = Capture(_MAX_OUTPUT_BYTES)
            token = current_capture.set(output)
            try:
                result = await invoke(call, request(call))
            except BaseException:
                current_capture.reset(token)
                _forward(output)
                raise
            current_capture.reset(token)
            return respond(result, output, call)

        return Bound(run=run_async, is_async=True)

    def run(call: Incoming) -> Outgoing:
        output = Capture(_MAX_OUTPUT_BYTES)
        token = current_capture.set(output)
        try:
            result = invoke(call, request(call))
        except BaseException:
            current_capture.reset(token)
            _forward(output)
            raise
        current_capture.reset(token)
        return respond(result, output, call)

    return Bound(run=run, is_async=False)


def _forward(output: Capture) -> None:
    """What the handler wrote, when it is not the response: to the activation's logs."""
    text = output.text()
    logs = current_capture.get()
    if text and logs is not None:
        logs.write(text)


class _CgiEnv:
    """The classic watchdog's request environment (cgi_headers): Http_Method, Http_Path,
    Http_Query, Http_ContentLength and Http_<Header> for each header, replaced per call (only
    the values that changed are written: putenv is the cost)."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def set(self, call: Incoming) -> None:
        env = {}
        for name, value in _headers(call):
            env["Http_" + name.title().replace("-", "_")] = value
        # The request's own after the headers, as the watchdog appends them: a header named
        # Method or Path cannot stand in for them.
        env["Http_Method"] = "POST" if call.is_event else call.method
        env["Http_Path"] = "/" if call.is_event else call.path
        env["Http_ContentLength"] = str(len(call.body))
        env.pop("Http_Query", None)
        if call.query and not call.is_event:
            env["Http_Query"] = call.query
        environ, last = os.environ, self.last
        for name in last.keys() - env.keys():
            environ.pop(name, None)
        for name, value in env.items():
            if last.get(name) != value:
                environ[name] = value
        self.last = env


def http_result(result: Any) -> Outgoing:
    """python3-http's index.py: format_response, then Flask's make_response."""
    if result is None:
        return 200, [["Content-Type", HTML]], b""
    if not isinstance(result, dict):
        return flask_response(result)
    given = result.get("headers")
    headers: Any = list(given.items()) if isinstance(given, dict) else given or []
    if "body" not in result:
        body: Any = ""
    else:
        body = result["body"]
        if isinstance(body, bytes | bytearray | memoryview):
            body = bytes(body)
        elif _content_type(headers) == "application/octet-stream":
            body = b"" if body is None else body
        elif not isinstance(body, dict):
            body = str(body)
    return flask_response((body, result.get("statusCode", 200), headers))


def _content_type(headers: Any) -> str:
    for name, value in headers:
        if str(name).lower() == "content-type":
            return str(value).partition(";")[0].strip().lower()
    return ""
