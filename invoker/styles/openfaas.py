"""OpenFaaS's Python templates, without Flask in the function's environment.

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
a topic's events, as OpenFaaS connectors send).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import email.utils
import inspect
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import orjson

from invoker.context import Capture, current_capture
from invoker.styles import BadRequest, BindInfo, Bound, Incoming, Outgoing, mismatch
from invoker.styles.native import describe, positional_arity, takes

SIGNATURE = "def handle(event, context) (python3-http) or def handle(req) (python3, python3-flask)"

_HTML = "text/html; charset=utf-8"
_JSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
_CLASSIC_FIRST = ("req", "request", "body", "data", "payload")
_MAX_OUTPUT_BYTES = 64 << 20


class MissingKey(KeyError, BadRequest):
    """A key that is not in event.query or event.headers: as in Flask (werkzeug's
    BadRequestKeyError), an uncaught one answers 400."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(key)
        self.where = where

    def __str__(self) -> str:
        return f"the request has no {self.where} {self.args[0]!r}"


class Headers:
    """The request's headers, like Flask's request.headers: case-insensitive get / [] /
    getlist / in, and iteration over (name, value) pairs."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        merged: dict[str, list[str]] = {}
        for name, value in items:
            title = name.title()
            if title in merged:
                merged[title][1] += ", " + value
            else:
                merged[title] = [title, value]
        self._items: list[tuple[str, str]] = [(k, v) for k, v in merged.values()]

    def _find(self, key: str) -> str | None:
        lowered = key.lower()
        for name, value in self._items:
            if name.lower() == lowered:
                return value
        return None

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        value = self._find(key)
        if value is None:
            return default
        if type is None:
            return value
        try:
            return type(value)
        except ValueError:
            return default

    def getlist(self, key: str, type: Callable[[str], Any] | None = None) -> list[Any]:
        value = self._find(key)
        if value is None:
            return []
        return [value if type is None else type(value)]

    get_all = getlist

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self._items[key]
        value = self._find(key)
        if value is None:
            raise MissingKey(key, "header")
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def values(self) -> list[str]:
        return [value for _, value in self._items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def to_wsgi_list(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Query(dict[str, Any]):
    """The query parameters, like Flask's request.args (a MultiDict): [key] and .get give
    the first value, .getlist all of them, .to_dict() a plain dict."""

    def __init__(self, query: str) -> None:
        super().__init__()
        for key, value in parse_qsl(query, keep_blank_values=True):
            dict.setdefault(self, key, []).append(value)

    def __getitem__(self, key: str) -> str:
        try:
            return str(dict.__getitem__(self, key)[0])
        except KeyError:
            raise MissingKey(key, "query parameter") from None

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        try:
            value = dict.__getitem__(self, key)[0]
        except KeyError:
            return default
        if type is None:
            return value
        try:
            return type(value)
        except ValueError:
            return default

    def getlist(self, key: str, type: Callable[[str], Any] | None = None) -> list[Any]:
        values = dict.get(self, key, [])
        return list(values) if type is None else [type(v) for v in values]

    def items(self, multi: bool = False) -> Iterator[tuple[str, str]]:  # type: ignore[override]
        for key, values in dict.items(self):
            if multi:
                yield from ((key, v) for v in values)
            else:
                yield key, values[0]

    def values(self) -> Iterator[str]:  # type: ignore[override]
        return (values[0] for values in dict.values(self))

    def lists(self) -> Iterator[tuple[str, list[str]]]:
        return ((k, list(v)) for k, v in dict.items(self))

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        if flat:
            return dict(self.items())
        return {k: list(v) for k, v in dict.items(self)}


class Event:
    """What python3-http's handle(event, context) gets."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, call: Incoming) -> None:
        self.body: bytes = call.body
        self.headers = Headers(_headers(call))
        self.method: str = "POST" if call.is_event else call.method
        self.query = Query("" if call.is_event else call.query)
        self.path: str = "/" if call.is_event else call.path


class Context:
    __slots__ = ("hostname",)

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
    if takes(target, 2) and (required >= 2 or first not in _CLASSIC_FIRST):
        return _bind_http(target)
    if takes(target, 1):
        return _bind_classic(target)
    raise mismatch("openfaas", describe(target, info.entry), SIGNATURE)


def _first_param(target: Any) -> str:
    try:
        params = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return ""
    return params[0] if params else ""


def _bind_http(handler: Any) -> Bound:
    context = Context(os.environ.get("HOSTNAME", "localhost"))
    if inspect.iscoroutinefunction(handler):

        async def run_async(call: Incoming) -> Outgoing:
            return http_result(await handler(Event(call), context))

        return Bound(run=run_async, is_async=True)

    def run(call: Incoming) -> Outgoing:
        return http_result(handler(Event(call), context))

    return Bound(run=run, is_async=False)


def _bind_classic(handler: Any) -> Bound:
    as_bytes = _is_true(os.environ.get("RAW_BODY", "false"))
    forced_type = os.environ.get("content_type", "")  # noqa: SIM112 (the watchdog's name)
    cgi = _CgiEnv()

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
                result = await handler(request(call))
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
            result = handler(request(call))
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
        env = {
            "Http_Method": "POST" if call.is_event else call.method,
            "Http_Path": "/" if call.is_event else call.path,
            "Http_ContentLength": str(len(call.body)),
        }
        if call.query and not call.is_event:
            env["Http_Query"] = call.query
        for name, value in _headers(call):
            env["Http_" + name.title().replace("-", "_")] = value
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
        return 200, [["Content-Type", _HTML]], b""
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


def flask_response(result: Any) -> Outgoing:
    """The response Flask makes from a view's return value (flask.Flask.make_response)."""
    status: Any = None
    headers: Any = None
    if isinstance(result, tuple):
        if len(result) == 3:
            result, status, headers = result
        elif len(result) == 2:
            if isinstance(result[1], dict | list | tuple | Headers):
                result, headers = result
            else:
                result, status = result
        else:
            raise TypeError(
                "The view function did not return a valid response tuple. The tuple must have "
                f"the form (body, status, headers), (body, status), or (body, headers); it has "
                f"{len(result)} items"
            )
    if result is None:
        raise TypeError(
            "the handler returned None (in a tuple); return a str, bytes, dict, list or tuple"
        )
    out_status = 200
    if hasattr(result, "get_data") and hasattr(result, "status_code"):
        out_status = int(result.status_code)
        out_headers = _pairs(getattr(result, "headers", []))
        body = result.get_data()
    elif isinstance(result, str):
        body, out_headers = result.encode(), [["Content-Type", _HTML]]
    elif isinstance(result, bytes | bytearray | memoryview):
        body, out_headers = bytes(result), [["Content-Type", _HTML]]
    elif isinstance(result, dict | list):
        body, out_headers = jsonify(result), [["Content-Type", "application/json"]]
    elif isinstance(result, Iterable) and not isinstance(result, int | float):
        body = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in result)
        out_headers = [["Content-Type", _HTML]]
    else:
        raise TypeError(
            f"the handler returned a {type(result).__name__} ({result!r:.80}); OpenFaaS's "
            "templates take a str, bytes, dict, list or (body, status, headers) tuple"
        )
    if status is not None:
        out_status = _status(status)
    if headers:
        given = _pairs(headers)
        names = {name.lower() for name, _ in given}
        out_headers = [h for h in out_headers if h[0].lower() not in names] + given
    return out_status, out_headers, body


def _pairs(headers: Any) -> list[list[str]]:
    if hasattr(headers, "to_wsgi_list"):
        headers = headers.to_wsgi_list()
    elif isinstance(headers, dict):
        headers = headers.items()
    return [[str(name), str(value)] for name, value in headers]


def _status(value: Any) -> int:
    code = value
    if isinstance(value, str):
        head = value.strip().split(" ", 1)[0]
        code = int(head) if head.isdigit() else None
    if isinstance(code, int) and not isinstance(code, bool) and 200 <= code <= 599:
        return code
    raise TypeError(f"the handler returned the status {value!r}; give an HTTP status, 200-599")


def jsonify(value: Any) -> bytes:
    """JSON as Flask's jsonify writes it: sorted keys, compact, a newline at the end."""
    try:
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
    except TypeError as exc:
        raise TypeError(
            f"the handler returned a value that is not JSON-serializable: {exc}"
        ) from None


def _json_default(value: Any) -> Any:
    """What Flask's JSON provider does with values JSON has no type for."""
    if isinstance(value, dt.date):
        if not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time(), dt.UTC)
        elif value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return email.utils.format_datetime(value.astimezone(dt.UTC), usegmt=True)
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "__html__"):
        return str(value.__html__())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
