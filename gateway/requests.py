"""What the admin API's handlers share: the platform of a request, its JSON body, `?limit=`,
and the answer for a function that does not exist."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.errors import bad_request, error_response
from gateway.namespaces import DEFAULT_NAMESPACE, shown_name, split_name
from gateway.platform import PLATFORM, Platform

MAX_ACTIVATIONS = 1000


def platform_of(request: web.Request) -> Platform:
    platform = request.app[PLATFORM]
    return platform


def not_found(name: str) -> web.Response:
    """`name` as stored: a function of a namespace is named as it is called, NAMESPACE/NAME."""
    namespace, short = split_name(name)
    where = "" if namespace == DEFAULT_NAMESPACE else f" --namespace {namespace}"
    return error_response(
        404,
        "function_not_found",
        f'function "{shown_name(name)}" not found; deploy it with: fn{where} deploy {short}.py',
    )


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise bad_request("bad_json", f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("bad_json", "request body must be a JSON object")
    return body


def limit_of(request: web.Request) -> int:
    raw = request.query.get("limit", "20")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_ACTIVATIONS):
        raise bad_request("bad_limit", f"limit must be 1-{MAX_ACTIVATIONS}, got {raw!r}")
    return int(raw)
