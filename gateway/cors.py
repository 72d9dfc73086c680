"""CORS for the functions that ask for it (`fn deploy --cors-origin`), answered by the gateway.

A preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) never reaches the
function, nor needs a key (browsers send none with it): an allowed origin gets 204 with the
methods and the requested headers, another a 403 in the JSON error shape. An actual request
from an allowed origin gets `Access-Control-Allow-Origin` on its response, whatever its status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE_S = 600


def allowed(origin: str, origins: tuple[str, ...]) -> bool:
    return "*" in origins or origin.rstrip("/") in origins


async def answer(
    request: web.Request, origins: tuple[str, ...], call: Handler
) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser's cross-origin request
        return await call(request)
    ok = allowed(origin, origins)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not ok:
            return error_response(
                403,
                "cors_origin_not_allowed",
                f"origin {origin[:200]!r} may not call this function; allow it with: "
                "fn deploy ... --cors-origin ORIGIN",
            )
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Max-Age": str(MAX_AGE_S),
            "Vary": "Origin",
        }
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        if "*" not in origins:
            headers["Access-Control-Allow-Credentials"] = "true"
        return web.Response(status=204, headers=headers)
    response = await call(request)
    if ok:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Ember-Activation-Id, X-Ember-Version"
        response.headers.add("Vary", "Origin")
        if "*" not in origins:
            response.headers["Access-Control-Allow-Credentials"] = "true"
    return response
