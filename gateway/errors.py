"""Error responses: `{"error": {"code", "message", ...}}`, the same shape everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


class BodyTimeout(TimeoutError):
    """The request's body did not arrive within `body_timeout_s` (raised by its reads)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request's body did not arrive within {timeout_s:g}s")
        self.timeout_s = timeout_s


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=str),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **fields: Any
) -> web.Response:
    return json_response({"error": {"code": code, "message": message, **fields}}, status, headers)


def payload_too_large(limit_bytes: int) -> web.Response:
    return error_response(
        413,
        "payload_too_large",
        f"request body is larger than the limit of {limit_bytes} bytes "
        f"({limit_bytes / (1 << 20):g} MiB); raise it with FN_MAX_BODY",
        limit_bytes=limit_bytes,
    )


def bad_request(code: str, message: str, **fields: Any) -> web.HTTPBadRequest:
    """A 400 to raise from deep in a handler, in the same JSON shape as `error_response`."""
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": {"code": code, "message": message, **fields}}).decode(),
        content_type="application/json",
    )
