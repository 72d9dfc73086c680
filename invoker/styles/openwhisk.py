"""Apache OpenWhisk's style: `main(args) -> dict` (any name with --handler, as wsk's --main).

An HTTP call runs the action as a web action (`wsk action create --web true`; option web=raw
for `--web raw`):

    args        the function's default parameters (env OPENWHISK_PARAMS, a JSON object), then
                the query parameters, then a JSON object or form body (later ones win); a
                request that sets a default parameter or an __ow_ name is refused (400)
    __ow_method the method, lowercase     __ow_headers  the headers, names lowercase
    __ow_path   the sub-path ("" for /)   __ow_body     a body that is not a JSON object or
                                                        form: a JSON value as is, text as
                                                        str, binary as base64
    raw:        __ow_query (the query string) and __ow_body (the whole body: text, or base64
                for binary and JSON), nothing merged

The activation's environment (`__OW_ACTIVATION_ID`, `__OW_DEADLINE` in ms since the epoch,
`__OW_ACTION_NAME`, ...) is set in os.environ for each call, as the Python runtime does; with
concurrency above 1 it holds the latest call's values. `__OW_API_HOST` and `__OW_API_KEY` are
empty unless the function's env sets them.

Results: a dict with `statusCode`, `headers` or `body` is an HTTP response (a string body
under a binary content type is base64-decoded, a JSON value body is JSON, no body is 204);
another dict or a list is JSON with 200; a dict with `error` is an application error: the
error is the response when it has those keys (400 unless it gives a status), else 400 with
{"error": ...}. Anything else is 502, as the runtime answers. OPTIONS is answered with the
default CORS headers, which every response carries unless the action sets them.

An event (topic, schedule, table) runs the action as a trigger would: its args are the default
parameters and the payload when it is a JSON object, else {"__ow_body": payload}.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import os
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson

from invoker.styles import BadRequest, BindInfo, Bound, Incoming, Outgoing, mismatch
from invoker.styles.native import describe, takes

SIGNATURE = "def main(args) -> dict (or async def)"
PARAMS_ENV = "OPENWHISK_PARAMS"
"""The function's environment variable with its default parameters (wsk's --param)."""

_RESERVED = frozenset(
    ("__ow_method", "__ow_headers", "__ow_path", "__ow_user", "__ow_query", "__ow_body")
)
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_TEXT_TYPES = frozenset(
    (_JSON, _FORM, "application/javascript", "application/ecmascript", "application/xml")
)
_BASE64 = re.compile(
    r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)"
)
_CORS_METHODS = "OPTIONS, GET, DELETE, POST, PUT, HEAD, PATCH"
_CORS_HEADERS = "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent"
_NOT_A_DICT = "The action did not return a dictionary or array."
_NOT_HTTP = "Response is not valid 'message/http'."


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def is_json_type(media: str) -> bool:
    return media == _JSON or media.endswith("+json")


def is_text_type(content_type: str) -> bool:
    """Whether OpenWhisk takes a body of this type as text (else binary, base64): text/*, JSON,
    XML, JavaScript, forms, and any type that names a charset."""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media.startswith("text/") or media in _TEXT_TYPES:
        return True
    if media.startswith("application/") and media.endswith(("+json", "+xml")):
        return True
    return "charset=" in params.lower()


def bind(target: Any, info: BindInfo) -> Bound:
    if not callable(target) or not takes(target, 1):
        raise mismatch("openwhisk", describe(target, info.entry), SIGNATURE)
    action = target
    raw = info.options.get("web", "true") == "raw"
    defaults = _default_params()
    namespace = os.environ.get("__OW_NAMESPACE") or "guest"
    os.environ.update(
        __OW_NAMESPACE=namespace,
        __OW_ACTION_NAME=f"/{namespace}/{info.function}",
        __OW_ACTION_VERSION=f"0.0.{info.version}",
    )
    # No OpenWhisk API to call back: empty unless the function's env points at one (actions
    # read them with os.environ[...] and would fail on a missing key).
    os.environ.setdefault("__OW_API_HOST", "")
    os.environ.setdefault("__OW_API_KEY", "")
    make_args = _raw_args if raw else _web_args

    def prepare(call: Incoming) -> dict[str, Any] | None:
        """The action's args, or None for a preflight answered without running it."""
        environ = os.environ
        activation = call.context.activation_id
        environ["__OW_ACTIVATION_ID"] = activation
        environ["__OW_TRANSACTION_ID"] = activation
        environ["__OW_DEADLINE"] = str(int((time.time() + call.context.remaining_s()) * 1000))
        if call.is_event:
            return _event_args(call, defaults)
        if call.method == "OPTIONS":
            return None
        return make_args(call, defaults)

    def preflight(call: Incoming) -> Outgoing:
        return 200, _cors([], call), b""

    def relabel(version: int) -> None:  # (the instance checked at deploy was version 0)
        os.environ["__OW_ACTION_VERSION"] = f"0.0.{version}"

    options = {"web": "raw" if raw else "true"}

    if inspect.iscoroutinefunction(action):

        async def run_async(call: Incoming) -> Outgoing:
            args = prepare(call)
            if args is None:
                return preflight(call)
            return _respond(await action(args), call)

        return Bound(run=run_async, is_async=True, relabel=relabel, options=options)

    def run(call: Incoming) -> Outgoing:
        args = prepare(call)
        if args is None:
            return preflight(call)
        return _respond(action(args), call)

    return Bound(run=run, is_async=False, relabel=relabel, options=options)


def _default_params() -> dict[str, Any]:
    text = os.environ.get(PARAMS_ENV, "")
    if not text:
        return {}
    try:
        params = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(
            f"{PARAMS_ENV} is not JSON ({exc}): {text[:80]!r}; give the default parameters as a "
            'JSON object, like --env OPENWHISK_PARAMS=\'{"name": "Jane"}\''
        ) from None
    if not isinstance(params, dict):
        raise ValueError(
            f"{PARAMS_ENV} must be a JSON object of parameters, not {text[:80]!r}; "
            'like --env OPENWHISK_PARAMS=\'{"name": "Jane"}\''
        )
    return params


def _body_text(body: bytes, content_type: str) -> str:
    """A body OpenWhisk hands over as a string: text as is, binary as base64."""
    if is_text_type(content_type):
        return body.decode("utf-8", "replace")
    return base64.b64encode(body).decode("ascii")


def _metadata(call: Incoming) -> dict[str, Any]:
    return {
        "__ow_method": call.method.lower(),
        "__ow_headers": {name.lower(): value for name, value in call.headers},
        "__ow_path": "" if call.path == "/" else call.path,
    }


def _merge(args: dict[str, Any], params: Any, defaults: dict[str, Any]) -> None:
    for key, value in params:
        if key in _RESERVED or key in defaults:
            what = "a reserved name" if key in _RESERVED else f"a default parameter ({PARAMS_ENV})"
            raise BadRequest(
                f"the request sets {key!r}, {what} that a web action's request may not set "
                "(as in OpenWhisk); leave it out of the query and body"
            )
        args[key] = value


def _web_args(call: Incoming, defaults: dict[str, Any]) -> dict[str, Any]:
    args = dict(defaults)
    if call.query:
        _merge(args, parse_qsl(call.query, keep_blank_values=True), defaults)
    body = call.body
    if body:
        media = media_type(call.content_type)
        if is_json_type(media):
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"the request body is not valid JSON: {exc}") from None
            if isinstance(value, dict):
                _merge(args, value.items(), defaults)
            else:
                args["__ow_body"] = value
        elif media == _FORM:
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            _merge(args, form, defaults)
        else:
            args["__ow_body"] = _body_text(body, call.content_type or "application/octet-stream")
    args.update(_metadata(call))
    return args


def _raw_args(call: Incoming, defaults: dict[str, Any]) -> dict[str, Any]:
    args = dict(defaults)
    args.update(_metadata(call))
    args["__ow_query"] = call.query
    body = call.body
    if not body:
        args["__ow_body"] = ""
    elif media_type(call.content_type) == _JSON:
        args["__ow_body"] = base64.b64encode(body).decode("ascii")
    else:
        args["__ow_body"] = _body_text(body, call.content_type or "application/octet-stream")
    return args


def _event_args(call: Incoming, defaults: dict[str, Any]) -> dict[str, Any]:
    """A trigger's parameters: the payload when it is a JSON object."""
    args = dict(defaults)
    body = call.body
    if not body:
        return args
    if is_json_type(media_type(call.content_type)):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the event's payload is not valid JSON: {exc}") from None
        if isinstance(value, dict):
            args.update(value)
        else:
            args["__ow_body"] = value
    else:
        args["__ow_body"] = _body_text(body, call.content_type or "application/octet-stream")
    return args


def _json(status: int, value: Any, call: Incoming) -> Outgoing:
    try:
        body = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise TypeError(
            f"the action returned a value that is not JSON-serializable: {exc}"
        ) from None
    return status, _cors([["Content-Type", _JSON]], call), body


def _respond(result: Any, call: Incoming) -> Outgoing:
    if isinstance(result, dict):
        if "error" in result:
            error = result["error"]
            if isinstance(error, dict) and _is_http(error):
                return _http(error, call, default_status=400)
            return _json(400, {"error": error}, call)
        if _is_http(result):
            return _http(result, call, default_status=None)
        return _json(200, result, call)
    if isinstance(result, list):
        return _json(200, result, call)
    return _unusable(f"a {_quote(result)}", call, _NOT_A_DICT)


def _is_http(result: dict[str, Any]) -> bool:
    return "statusCode" in result or "body" in result or "headers" in result


def _quote(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__}: {text[:80]}{'...' if len(text) > 80 else ''}"


def _unusable(reason: str, call: Incoming, message: str = _NOT_HTTP) -> Outgoing:
    """502, as OpenWhisk's runtime answers a result it cannot use; the reason goes to the
    activation's logs."""
    sys.stderr.write(f"openwhisk style: {message} The action's result: {reason}\n")
    return _json(502, {"error": message}, call)


def _http(result: dict[str, Any], call: Incoming, default_status: int | None) -> Outgoing:
    """A web action's HTTP response: statusCode, headers, body."""
    headers: list[list[str]] = []
    given = result.get("headers")
    if given is not None:
        if not isinstance(given, dict):
            return _unusable(f"headers must be an object, not {_quote(given)}", call)
        for name, value in given.items():
            for one in value if isinstance(value, list) else (value,):
                if not isinstance(one, str | int | float | bool):
                    return _unusable(f"header {name!r} has the value {_quote(one)}", call)
                text = ("true" if one else "false") if isinstance(one, bool) else str(one)
                headers.append([str(name), text])
    status = _status(result.get("statusCode"))
    if status == 0:
        return _unusable(f"statusCode {_quote(result['statusCode'])} is not an HTTP status", call)
    body = result.get("body")
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    if body is None or body == "":
        headers = [h for h in headers if h[0].lower() != "content-type"]
        return status or default_status or 204, _cors(headers, call), b""
    status = status or default_status or 200
    if not isinstance(body, str):
        try:
            data = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            return _unusable(f"the body is not JSON-serializable: {exc}", call)
        if content_type is None:
            headers.append(["Content-Type", _JSON])
        return status, _cors(headers, call), data
    if content_type is None:
        headers.append(["Content-Type", "text/html; charset=UTF-8"])
        return status, _cors(headers, call), body.encode()
    media = media_type(content_type)
    if is_json_type(media):  # base64 JSON, for old actions; not JSON that looks like it ("true")
        decoded = _base64(body) if _BASE64.fullmatch(body.strip()) and not _is_json(body) else None
    elif not is_text_type(content_type):
        decoded = _base64(body)
    else:
        decoded = None
    return status, _cors(headers, call), body.encode() if decoded is None else decoded


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _status(value: Any) -> int | None:
    """The statusCode as an int (None: not given; 0: not a status)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 200 <= value <= 599:
        return value
    return 0


def _base64(text: str) -> bytes | None:
    """The bytes a base64 body stands for; None when it is not base64 (then it goes as text,
    where OpenWhisk would refuse it)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _cors(headers: list[list[str]], call: Incoming) -> list[list[str]]:
    """Add OpenWhisk's default CORS headers that the action did not set itself."""
    if call.is_event:
        return headers
    present = {name.lower() for name, _ in headers}
    if "access-control-allow-origin" not in present:
        headers.append(["Access-Control-Allow-Origin", "*"])
    if "access-control-allow-methods" not in present:
        headers.append(["Access-Control-Allow-Methods", _CORS_METHODS])
    if "access-control-allow-headers" not in present:
        asked = call.header("Access-Control-Request-Headers")
        headers.append(["Access-Control-Allow-Headers", asked or _CORS_HEADERS])
    return headers
