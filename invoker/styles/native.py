"""Ember's own style: `handler(event, context)`, sync or async (DESIGN.md, the handler contract).

The event is the decoded JSON body (an empty body is {}), else the raw bytes; the result is JSON,
text, bytes or a `Response`.
"""

from __future__ import annotations

import inspect
from typing import Any

import orjson

from invoker.context import Response
from invoker.styles import BadRequest, BindInfo, Bound, Incoming, Outgoing, mismatch

SIGNATURE = "def handler(event, context) (or async def)"
_JSON_TYPES = ("application/json", "+json")


def decode_event(body: bytes, content_type: str) -> Any:
    """The handler's `event`: decoded JSON for JSON requests and empty bodies, else bytes."""
    if not body:
        return {}
    if content_type.startswith(_JSON_TYPES[0]) or _JSON_TYPES[1] in content_type.split(";")[0]:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
    return body


def encode_result(result: Any) -> Outgoing:
    """Turn a handler's return value into (status, headers, body)."""
    status, headers = 200, []
    if isinstance(result, Response):
        status = int(result.status)
        headers = [[str(k), str(v)] for k, v in result.headers.items()]
        result = result.body
        if not 200 <= status <= 599:  # (1xx would switch protocols or confuse proxies)
            raise ValueError(f"Response status must be 200-599, got {status}")
    has_type = any(k.lower() == "content-type" for k, _ in headers)
    if isinstance(result, bytes | bytearray | memoryview):
        body, ctype = bytes(result), "application/octet-stream"
    elif isinstance(result, str):
        body, ctype = result.encode(), "text/plain; charset=utf-8"
    else:
        try:
            body = orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise TypeError(
                f"the handler returned a value that is not JSON-serializable: {exc}"
            ) from None
        ctype = "application/json"
    if not has_type:
        headers.append(["Content-Type", ctype])
    return status, headers, body


def positional_arity(target: Any) -> tuple[int, int] | None:
    """(required, most) positional parameters of a callable (most -1: *args), or None when its
    signature cannot be read."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    required = most = 0
    for param in signature.parameters.values():
        if param.kind == param.VAR_POSITIONAL:
            most = -1
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            if most >= 0:
                most += 1
            if param.default is param.empty:
                required += 1
        elif param.kind == param.KEYWORD_ONLY and param.default is param.empty:
            return (required, -2)  # a required keyword-only parameter: cannot be called
    return required, most


def takes(target: Any, count: int) -> bool:
    """Whether `target` can be called with `count` positional arguments."""
    arity = positional_arity(target)
    if arity is None:
        return callable(target)
    required, most = arity
    return most != -2 and required <= count and (most == -1 or count <= most)


def describe(target: Any, entry: str) -> str:
    """How an entry point reads in an error message: `def main(args)`, `a Flask object`."""
    if inspect.isfunction(target) or inspect.ismethod(target):
        try:
            params = inspect.signature(target).parameters.values()
            signature = "(" + ", ".join(str(p.replace(annotation=p.empty)) for p in params) + ")"
        except (TypeError, ValueError):
            signature = "(...)"
        prefix = "async def" if inspect.iscoroutinefunction(target) else "def"
        return f"{prefix} {entry}{signature}"
    return f'"{entry}" (a {type(target).__name__})'


def bind(target: Any, info: BindInfo) -> Bound:
    if not callable(target) or not takes(target, 2):
        raise mismatch("ember", describe(target, info.entry), SIGNATURE)
    handler = target
    if inspect.iscoroutinefunction(handler):

        async def run_async(call: Incoming) -> Outgoing:
            return encode_result(
                await handler(decode_event(call.body, call.content_type), call.context)
            )

        return Bound(run=run_async, is_async=True)

    def run(call: Incoming) -> Outgoing:
        return encode_result(handler(decode_event(call.body, call.content_type), call.context))

    return Bound(run=run, is_async=False)
