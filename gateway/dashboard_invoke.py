"""The dashboard's side of its own origin: calling a function from its page, and sending a
browser that asks the gateway's port for `/ui` to the dashboard's.

The dashboard is served on a port of its own (FN_DASHBOARD_PORT): a function's page is
served on the gateway's port (`/fn/...`), and a page can script every page of its origin
(open it, read it, register a service worker over it), so the dashboard, which holds its
viewer's session, must be of another origin. Its page calls a function through
`POST /ui/functions/NAME/invoke` (signed in, allowed to act, the page's CSRF token): the
dashboard makes the call on the gateway's port, as any client would, and answers with its
status, activation id and body as JSON: a function's answer is shown, never rendered.
"""

from __future__ import annotations

from urllib.parse import unquote

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.dashboard_auth import checked_post, namespace_of
from gateway.errors import error_response, json_response
from gateway.namespaces import DEFAULT_NAMESPACE
from gateway.platform import PLATFORM, Platform
from gateway.units import NAME

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


DASHBOARD = web.AppKey("dashboard", bool)
"""Set on the dashboard's application (the other port's is the gateway's)."""


def _below(path: str) -> bool:
    """A sub-path of the function's: no `.` or `..` segment, written plainly or
    percent-encoded, and no backslash."""
    decoded = unquote(path)
    return "\\" not in decoded and not {".", ".."} & set(decoded.split("/"))


def calls_url(platform: Platform) -> str:
    """Where this gateway takes calls, from this machine."""
    host = platform.settings.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{platform.served['calls']}"


async def invoke(request: web.Request) -> web.Response:
    checked = await checked_post(request)
    if isinstance(checked, web.Response):
        return checked
    namespace = namespace_of(request, checked)
    if isinstance(namespace, web.Response):
        return namespace
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        return error_response(400, "bad_name", f"{name[:100]!r} is not a function name")
    try:
        asked = await request.json()
    except ValueError:
        asked = None
    if not isinstance(asked, dict):
        return error_response(400, "bad_request", 'expected {"method", "path", "body"}')
    method = str(asked.get("method", "POST")).upper()
    path = str(asked.get("path") or "").lstrip("/")
    body = asked.get("body")
    if method not in METHODS or not isinstance(body, str | None) or not _below(path):
        return error_response(
            400,
            "bad_request",
            f"method one of {', '.join(sorted(METHODS))}, a path below the function's, "
            "body a string",
        )
    prefix = "" if namespace == DEFAULT_NAMESPACE else f"{namespace}/"
    own = f"/fn/{prefix}{name}"
    url = URL(f"{calls_url(request.app[PLATFORM])}{own}" + (f"/{path}" if path else ""))
    if url.path != own and not url.path.startswith(own + "/"):  # (what yarl made of it)
        return error_response(400, "bad_request", "a path below the function's")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, data=body, headers=headers, allow_redirects=False) as reply,
    ):
        text = (await reply.read()).decode(errors="replace")
        return json_response(
            {
                "status": reply.status,
                "activation_id": reply.headers.get("X-Ember-Activation-Id", ""),
                "body": text,
            }
        )


async def elsewhere(request: web.Request) -> web.Response:
    """`/ui` asked of the gateway's port: the dashboard is at its own; anything else asked of
    the dashboard's: the gateway's (a 307 there, either way)."""
    platform = request.app[PLATFORM]
    port = platform.served.get("calls" if request.app.get(DASHBOARD) else "dashboard")
    if not port:
        return error_response(404, "not_found", "this gateway serves no dashboard")
    try:
        there = str(request.url.with_port(port))
    except ValueError:  # (a Host header that is not one)
        return error_response(400, "bad_request", "the Host header is not a host")
    raise web.HTTPTemporaryRedirect(there)
