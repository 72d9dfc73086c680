"""The aiohttp application: routes, the admin-token check, and JSON errors for everything:
whatever a handler raises or aiohttp answers itself (no route, wrong method, a body too
large or too slow, `Expect`) is the `{"error": {...}}` shape with its status."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import (
    admin,
    dashboard,
    dashboard_invoke,
    docs,
    events,
    handoff,
    insights,
    policies,
    tenancy,
    trusted_envs,
)
from gateway.api_spec import operation
from gateway.auth import PRINCIPAL, authenticate, permit
from gateway.connections import DISPATCH, RequestHandlerFn
from gateway.environments import environment_archive
from gateway.errors import BodyTimeout, error_response, json_response, payload_too_large
from gateway.invoke import invoke
from gateway.namespaces import qualify
from gateway.platform import PLATFORM, Platform
from gateway.requests import not_found
from gateway.schemas import Health
from gateway.tenancy import audit
from gateway.units import NAME
from invoker.protocol import MAX_META_BYTES
from store import DatabaseUnavailable

log = logging.getLogger("ember.gateway.app")
ADMIN_MAX_BODY = web.AppKey("admin_max_body", int)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every admin route: who asks and whether they may (`auth.authorize`, in two steps),
    function names put in the request's namespace, and each action audited."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    principal = authenticate(request)
    if isinstance(principal, web.Response):
        await audit(request, None, route, principal.status)
        return principal
    refusal = permit(principal, request.method, route)
    if refusal is not None:
        await audit(request, principal, route, refusal.status)
        return refusal
    request[PRINCIPAL] = principal
    name = request.match_info.get("name")
    if name is not None and request.path.startswith("/v1/functions/"):
        if not NAME.fullmatch(name):
            return not_found(name)  # no such function can exist; the store is not asked
        request.match_info["name"] = qualify(principal.namespace, name)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        await audit(request, principal, route, status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The last word on every request's errors: what escapes the handlers, and what aiohttp
    raises (no route, wrong method), as the JSON error shape."""
    if request.version.major != 1:  # HTTP/0.9 ("GET /" and an empty line)
        return _closing(
            error_response(505, "http_version_not_supported", "use HTTP/1.1 (or HTTP/1.0)")
        )
    _admit_deploy_size(request)
    length = request.content_length
    if length is not None and length > request.client_max_size:
        return _closing(payload_too_large(request.client_max_size))  # not read, not waited for
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return http_error(request, exc)
    except BodyTimeout as exc:
        return _closing(error_response(408, "body_timeout", f"{exc} (FN_BODY_TIMEOUT)"))
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # e.g. gzip that is not
        cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else exc
        message = str(getattr(cause, "message", "") or exc)[:200]
        return _closing(error_response(400, "bad_request_body", f"bad request body: {message}"))
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


def http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own error (text/plain) as the JSON shape, with its headers (Allow...)."""
    headers = {
        k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
    }
    path = request.path if len(request.path) <= 200 else request.path[:200] + "..."
    if isinstance(exc, web.HTTPNotFound):
        code, message = "not_found", f"nothing at {path!r}: see the API in the README"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        code, message = "method_not_allowed", f"{exc.method} is not allowed on {path!r}: {allowed}"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        return _closing(payload_too_large(request.client_max_size))
    else:
        code, message = exc.reason.lower().replace(" ", "_"), exc.text or exc.reason
    return error_response(exc.status, code, message, headers=headers)


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


def _admit_deploy_size(request: web.Request) -> None:
    """The admin API reads deploys (code, base64 in JSON) up to its own limit: aiohttp reads
    every request with the root application's `client_max_size` (the calls' FN_MAX_BODY), and
    a sub-application's is not used, so the limit is raised here for `/v1` (cold path only)."""
    if request.path.startswith("/v1/"):
        request._client_max_size = request.app[ADMIN_MAX_BODY]
    elif request.path.startswith("/peer/"):  # a delivery (the admin API took it) and its meta
        request._client_max_size = request.app[ADMIN_MAX_BODY] + MAX_META_BYTES


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: refuse a body over the limit before the client sends it (413
    instead of "100 Continue"); else invite it."""
    if request.version != (1, 1):
        return None
    _admit_deploy_size(request)
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        return _closing(
            error_response(417, "expectation_failed", f"Expect: {expect[:100]!r} is not served")
        )
    length = request.content_length
    if length is not None and length > request.client_max_size:
        return _closing(payload_too_large(request.client_max_size))
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the response proper starts after it
    return None


@operation(
    "meta", "Is this gateway healthy (and which protections are on)", responses={200: Health}
)
async def healthz(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    failure = platform.failure()
    isolation = platform.isolation()
    extra = {} if isolation is None else {"isolation": isolation}
    if failure is not None:
        return error_response(503, "unhealthy", failure, **extra)
    return json_response({"status": "ok", **extra})


@operation("meta", "Prometheus metrics", responses={200: "text/plain"})
async def metrics(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    return web.Response(
        body=generate_latest(platform.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def build_app(platform: Platform) -> web.Application:
    """Calls (`/fn/...`) pass one middleware (`json_errors`; the call path answers its own
    errors), and the admin API (`/v1`) is a sub-application with the token check."""
    app = web.Application(
        client_max_size=platform.settings.max_body_bytes, middlewares=[json_errors]
    )
    app[PLATFORM] = platform
    # A deploy carries the code base64-encoded in JSON.
    admin_max = max(
        platform.settings.max_body_bytes, platform.settings.max_source_bytes * 4 // 3 + (1 << 20)
    )
    app[ADMIN_MAX_BODY] = admin_max
    admin_app = web.Application(client_max_size=admin_max, middlewares=[auth_middleware])
    admin_app[PLATFORM] = platform
    admin_app[ADMIN_MAX_BODY] = admin_max
    for route in [
        *admin.routes,
        *policies.routes,
        *events.routes,
        *insights.routes,
        *tenancy.routes,
        *trusted_envs.routes,
    ]:
        assert isinstance(route, web.RouteDef)
        admin_app.router.add_route(
            route.method,
            route.path.removeprefix("/v1"),
            route.handler,
            expect_handler=expect_continue,
        )
    docs.add_routes(app)  # (public, so before the sub-application)
    for path in ("/ui", "/ui/{tail:.*}"):  # (the dashboard is of another origin: its port)
        app.router.add_route("*", path, dashboard_invoke.elsewhere)
    app.add_subapp("/v1", admin_app)
    app.router.add_get("/healthz", healthz, expect_handler=expect_continue)
    app.router.add_get("/metrics", metrics, expect_handler=expect_continue)
    app.router.add_get("/environments/{hash}", environment_archive)
    app[handoff.HANDOFF] = platform.handoff
    app.router.add_post(handoff.PATH, handoff.serve)
    calls = [
        app.router.add_route("*", "/fn/{name}", invoke, expect_handler=expect_continue),
        app.router.add_route("*", "/fn/{name}/{tail:.*}", invoke, expect_handler=expect_continue),
    ]
    dispatch: Callable[[RequestHandlerFn], RequestHandlerFn] = functools.partial(
        calls_first, app, [route.resource for route in calls]
    )
    app[DISPATCH] = dispatch
    return app


def build_dashboard_app(platform: Platform) -> web.Application:
    """The dashboard (`/ui`), served on a port of its own (`gateway.dashboard_invoke`); any
    other path there is the gateway's (307 to its port). Serve it with a `GatewayRunner`:
    the same HTTP limits as the gateway's port."""
    app = web.Application(
        client_max_size=2 * platform.settings.max_body_bytes,  # (an invoke's body, in JSON)
        middlewares=[json_errors],
    )
    app[PLATFORM] = platform
    app[dashboard_invoke.DASHBOARD] = True
    app[ADMIN_MAX_BODY] = 2 * platform.settings.max_body_bytes
    dashboard.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", dashboard_invoke.elsewhere)
    return app


def calls_first(
    app: web.Application, resources: list[web.AbstractResource | None], handle: RequestHandlerFn
) -> RequestHandlerFn:
    """The server's request handler: a call (`/fn/...`) is matched by the two call routes
    alone and goes to `invoke` through `json_errors`, the only middleware it ever had; every
    other request, and a call with `Expect`, takes the application's own way (`handle`).

    What is skipped is the router's walk over the path and aiohttp's middleware layer that
    sets the current app, a few microseconds of every call; what a call sees is the same
    (the match info, its app, the JSON errors)."""
    routes = [resource for resource in resources if resource is not None]

    async def dispatch(request: BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/fn/") and hdrs.EXPECT not in request.headers:
            assert isinstance(request, web.Request)
            for resource in routes:
                match, _ = await resource.resolve(request)
                if match is not None:
                    match.add_app(app)
                    match.freeze()
                    request._match_info = match
                    return await json_errors(request, invoke)
        return await handle(request)

    return dispatch
