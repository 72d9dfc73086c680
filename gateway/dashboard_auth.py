"""Who may use the dashboard, decided in ONE place: `viewer_for(platform, secret)`. The secret
is the admin token (every namespace, may act), a deployer key (its namespace, may invoke and
redrive) or a reader key (its namespace, may only look: no buttons, and the POSTs answer 403).
An invoker key is refused: it is made for calling functions from a service, not for signing in
(a reader key is the one to hand to people). Keys come from the key ring (no SQL), checked on
every request, so a revoked or expired key is out at once. The secret pasted on the login page
is kept in an HttpOnly, SameSite=Strict cookie scoped to /ui; every POST also carries a CSRF
token derived from it (a page of another site can neither read it nor send the cookie). Also:
signing in and out, and the headers of every dashboard page."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aiohttp import web

from gateway import dashboard_html as h
from gateway.auth import RANKS
from gateway.errors import error_response
from gateway.keyring import KeyRefused
from gateway.namespaces import DEFAULT_NAMESPACE, NAMESPACE
from gateway.platform import PLATFORM, Platform

COOKIE = "ember_ui"
SESSION_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: `can_act` may invoke and redrive (the admin, a deployer key; a reader
    key may not); `namespace` is the one namespace it sees (None: the admin, every one)."""

    name: str
    can_act: bool
    namespace: str | None = None

    def sees(self, namespace: str) -> bool:
        return self.namespace is None or self.namespace == namespace


def viewer_for(platform: Platform, secret: str) -> Viewer | None:
    """THE dashboard's check of a secret (the login form's, then the cookie's)."""
    if not secret:
        return None
    if hmac.compare_digest(secret.encode("utf-8", "surrogateescape"), platform.token.encode()):
        return Viewer(name="admin", can_act=True)
    key = platform.keys.check(secret)
    if isinstance(key, KeyRefused) or key.role == "invoker":
        return None
    return Viewer(
        name=f"{key.role} key {key.id} of {key.namespace}",
        can_act=RANKS[key.role] >= RANKS["deployer"],
        namespace=key.namespace,
    )


def namespace_of(request: web.Request, viewer: Viewer) -> str | web.Response:
    """The namespace a page is about: `?namespace=` (the admin may name any), else the
    viewer's own (the admin's: `default`); a key asking for another one gets the 403."""
    asked = request.query.get("namespace") or viewer.namespace or DEFAULT_NAMESPACE
    if not NAMESPACE.fullmatch(asked):
        return error_response(400, "bad_namespace", f"{asked[:50]!r} is not a namespace")
    if not viewer.sees(asked):
        return error_response(
            403, "forbidden", f"this {viewer.name} sees namespace {viewer.namespace!r} only"
        )
    return asked


def _cookie_header(request: web.Request) -> str:
    return ";".join(request.headers.getall("Cookie", []))


def tossed(request: web.Request) -> bool:
    """Whether the browser sent the session cookie's name more than once: a page of this host
    name (a function's, on the gateway's port: cookies do not tell ports apart) set one of
    its own beside the viewer's (at another path, or inside another cookie's value, which
    some parsers read as a cookie of its own) to sign them in as someone else. Nobody is
    signed in then."""
    return _cookie_header(request).count(COOKIE) > 1


def session_secret(request: web.Request) -> str:
    """The session cookie's value, read as browsers write the header (`name=value` pairs
    split on ";"); "" when there is none, or when it is `tossed`."""
    raw = _cookie_header(request)
    if raw.count(COOKIE) != 1:
        return ""
    for pair in raw.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name == COOKIE:
            return value.strip().strip('"')
    return ""


def viewer_of(request: web.Request) -> Viewer | None:
    return viewer_for(request.app[PLATFORM], session_secret(request))


def csrf_token(request: web.Request) -> str:
    secret = session_secret(request).encode("utf-8", "surrogateescape")
    return hmac.new(secret, b"ember dashboard csrf", hashlib.sha256).hexdigest()


async def checked_post(request: web.Request) -> Viewer | web.Response:
    """A POST of the dashboard: signed in, allowed to act, with the page's CSRF token."""
    viewer = viewer_of(request)
    if viewer is None:
        return error_response(401, "unauthorized", "sign in at /ui/login")
    sent = request.headers.get("X-CSRF-Token")
    if sent is None:
        sent = str((await request.post()).get("csrf", ""))
    if not hmac.compare_digest(sent.encode(), csrf_token(request).encode()):
        return error_response(403, "bad_csrf_token", "reload the page and try again")
    if not viewer.can_act:
        return error_response(403, "forbidden", "this key may look, not act")
    return viewer


def not_from_the_dashboard(request: web.Request) -> web.Response | None:
    """A 403 for a browser's request to the dashboard that a page of the same origin made
    which is not the dashboard's: a function's page (`/fn/...` is served on this origin) may
    not open, frame or fetch the dashboard with its viewer's cookie. Browsers say where a
    request comes from (`Sec-Fetch-Site`); a same-origin one must come from a dashboard page
    (its `Referer`, which a page cannot forge for a navigation: the dashboard sends it,
    `Referrer-Policy: same-origin`) and, unless it is a navigation (a script's fetch may name
    another referrer), carry the page's CSRF token (`X-CSRF-Token`, or `csrf` in the query
    for an EventSource). Other clients (curl, a browser too old to say) pass.

    Also refused: a POST whose `Origin` is another than the dashboard's (a function's page
    signing its viewer in with the author's key: the gateway's port is another origin but
    the same site), and what a page of another origin makes a browser load without
    navigating (an image, a script: it reads nothing, but the cookie goes with it)."""
    site = request.headers.get("Sec-Fetch-Site")
    navigating = request.headers.get("Sec-Fetch-Mode") == "navigate"
    origin = request.headers.get("Origin")
    posted = request.method not in ("GET", "HEAD") and origin is not None
    if posted and urlsplit(origin or "").netloc.lower() != request.host.lower():
        return error_response(
            403, "not_from_the_dashboard", "a form of another origin than the dashboard's"
        )
    if site in ("same-site", "cross-site") and not navigating:
        return error_response(
            403, "not_from_the_dashboard", "the dashboard answers its own pages only"
        )
    if site != "same-origin":
        return None
    path = urlsplit(request.headers.get("Referer", "")).path
    if path == "/ui" or path.startswith("/ui/"):
        if navigating:
            return None
        sent = request.headers.get("X-CSRF-Token") or request.query.get("csrf", "")
        if hmac.compare_digest(sent.encode(), csrf_token(request).encode()):
            return None
    return error_response(
        403,
        "not_from_the_dashboard",
        "the dashboard answers its own pages only: open it at /ui (a function's page may "
        "not use it)",
    )


def to_login(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs)}")


# -- signing in and out -----------------------------------------------------------------------


async def login_page(request: web.Request, message: str = "") -> web.Response:
    if not message and tossed(request):
        message = (
            f"This browser holds more than one {COOKIE} cookie for this host (a page of "
            "another port set one): clear this site's cookies, then sign in."
        )
    error = f'<p class="error">{h.esc(message)}</p>' if message else ""
    nxt = request.query.get("next", "/ui")
    body = (
        '<section class="login"><h1>Sign in</h1>'
        "<p>Paste the admin token (<code>cat ~/.local/state/ember/token</code>) or an API key "
        "(reader: look; deployer: also invoke and redrive).</p>"
        f'{error}<form method="post" action="/ui/login">'
        f'<input type="hidden" name="next" value="{h.esc(nxt)}">'
        '<input type="password" name="token" id="token" autocomplete="current-password" '
        'placeholder="token" required autofocus><button type="submit">Sign in</button>'
        "</form></section>"
    )
    return html(h.page("Sign in", body, nav=False), status=401 if message else 200)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    secret = str(form.get("token", "")).strip()
    if viewer_for(request.app[PLATFORM], secret) is None:
        return await login_page(
            request, "That is not a valid token. Use the admin token, a reader or a deployer key."
        )
    nxt = str(form.get("next", "/ui"))
    if not nxt.startswith("/ui") or nxt.startswith("//"):
        nxt = "/ui"
    response = web.HTTPSeeOther(nxt)
    response.set_cookie(
        COOKIE,
        secret,
        max_age=SESSION_S,
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    checked = await checked_post(request)
    if isinstance(checked, web.Response):
        return checked
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie(COOKIE, path="/ui")
    raise response


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; "
            "frame-ancestors 'none'",
            "Referrer-Policy": "same-origin",  # (`not_from_the_dashboard` reads it)
        },
    )
