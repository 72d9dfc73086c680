"""The aiohttp application: routes, the admin-token check, and JSON errors for everything."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import admin, events, policies
from gateway.errors import error_response, json_response, payload_too_large
from gateway.invoke import invoke
from gateway.platform import PLATFORM, Platform
from store import DatabaseUnavailable

log = logging.getLogger("ember.gateway.app")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        platform = request.app[PLATFORM]
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), platform.token.encode()
        ):
            message = (
                "missing admin token: send Authorization: Bearer <token> (fn reads it "
                "from the state dir, or FN_TOKEN)"
                if not header
                else "wrong admin token"
            )
            return error_response(
                401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="ember"'}
            )
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    platform = request.app[PLATFORM]
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return payload_too_large(platform.settings.max_body_bytes)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        return error_response(
            exc.status,
            exc.reason.lower().replace(" ", "_"),
            exc.text or exc.reason,
            headers=exc.headers,
        )
    except DatabaseUnavailable as exc:
        log.warning("database unavailable: %s", exc)
        return error_response(
            503,
            "database_unavailable",
            f"the database is unavailable: {exc}; retry shortly",
            headers={"Retry-After": "1"},
        )
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "internal error; see the gateway's logs")


async def healthz(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    failure = platform.failure()
    isolation = platform.isolation()
    extra = {} if isolation is None else {"isolation": isolation}
    if failure is not None:
        return error_response(503, "unhealthy", failure, **extra)
    return json_response({"status": "ok", **extra})


async def metrics(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    return web.Response(
        body=generate_latest(platform.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def build_app(platform: Platform) -> web.Application:
    """Calls (`/fn/...`) run without middleware: the call path handles its own errors, and
    the admin API (`/v1`) is a sub-application with the token check and JSON errors."""
    app = web.Application(client_max_size=platform.settings.max_body_bytes)
    app[PLATFORM] = platform
    # A deploy carries the code base64-encoded in JSON.
    admin_max = max(
        platform.settings.max_body_bytes, platform.settings.max_source_bytes * 4 // 3 + (1 << 20)
    )
    admin_app = web.Application(
        client_max_size=admin_max, middlewares=[error_middleware, auth_middleware]
    )
    admin_app[PLATFORM] = platform
    for route in [*admin.routes, *policies.routes, *events.routes]:
        assert isinstance(route, web.RouteDef)
        admin_app.router.add_route(route.method, route.path.removeprefix("/v1"), route.handler)
    app.add_subapp("/v1", admin_app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/fn/{name}", invoke)
    app.router.add_route("*", "/fn/{name}/{tail:.*}", invoke)
    return app
