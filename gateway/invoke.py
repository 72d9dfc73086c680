"""`/fn/{name}`: the call path. Resolve the version from memory, take a warm slot, forward the
body as bytes, map the outcome to HTTP, and queue the activation record."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from calls.activations import new_activation_id
from calls.execute import execute, no_nul
from gateway import cors
from gateway.auth import invoke_refusal
from gateway.errors import error_response, json_response, payload_too_large
from gateway.namespaces import DEFAULT_NAMESPACE, qualify, shown_name, split_name
from gateway.platform import PLATFORM, Platform
from gateway.routing import HOP_PROOF_HEADER
from gateway.units import NAME
from invoker.protocol import RequestMeta
from store import (
    DatabaseUnavailable,
    FunctionNotFound,
    NewDelivery,
    Version,
    VersionNotFound,
)

log = logging.getLogger("ember.gateway.invoke")

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

_NOT_PASSED = _HOP_BY_HOP | {"x-ember-activation-id", "x-ember-version", "service-worker-allowed"}
"""Response headers of a handler that do not reach the caller (the platform sets its own)."""

_DASHBOARD_COOKIE = re.compile("ember_ui")
"""A Set-Cookie that names the dashboard's session (`gateway.dashboard_auth.COOKIE`), as its
name or inside another's value: a function, served on the dashboard's host name (cookies do
not tell ports apart), may not sign its viewer in or out of it."""

_UNREGISTER = (
    b"self.addEventListener('install', () => self.skipWaiting());\n"
    b"self.addEventListener('activate', () => self.registration.unregister());\n"
)
"""The only service worker a function's URL serves: it unregisters itself."""

MAX_VERSION = 2**31 - 1  # a Postgres integer


def _parse_target(target: str) -> tuple[str, int | None] | web.Response:
    """NAME or NAME:VERSION, else a 400. Checked here, not by the store: a name no function
    can have, or a version past an integer, is the caller's mistake, not a 500."""
    name, sep, pin = target.partition(":")
    if not NAME.fullmatch(name):
        shown = name if len(name) <= 100 else name[:100] + "..."
        return error_response(
            400,
            "bad_name",
            f"{shown!r} is not a function name: 1-63 lowercase letters, digits, - and _, "
            "starting with a letter (like hello-world)",
        )
    if not sep:
        return name, None
    if not (pin.isascii() and pin.isdigit() and len(pin) <= 10 and 1 <= int(pin) <= MAX_VERSION):
        shown = pin if len(pin) <= 20 else pin[:20] + "..."
        return error_response(
            400,
            "bad_version",
            f"{shown!r} is not a version of {name}: NAME:VERSION takes a number from 1 (like "
            f"{name}:3); list them with: fn versions {name}",
        )
    return name, int(pin)


async def invoke(request: web.Request) -> web.StreamResponse:
    if "Service-Worker" in request.headers:
        # A browser fetching a service worker's script: every function's pages share one
        # origin, and a worker of one (its scope /fn/) would answer for the others' pages. It
        # gets one that unregisters itself, which also retires a worker registered before.
        return web.Response(
            body=_UNREGISTER, content_type="text/javascript", headers={"Cache-Control": "no-store"}
        )
    platform = request.app[PLATFORM]
    target, namespace = request.match_info["name"], DEFAULT_NAMESPACE
    if "tail" in request.match_info and platform.keys.namespace_exists(target):
        # /fn/NAMESPACE/NAME[/path]: a namespace's name wins over a function's sub-path.
        namespace = target
        target, _, request.match_info["tail"] = request.match_info["tail"].partition("/")
    parsed = _parse_target(target)
    if isinstance(parsed, web.Response):
        return parsed
    name, pinned = qualify(namespace, parsed[0]), parsed[1]
    if (home := platform.router.home_of(name, request)) is not None:  # gateway/routing.py
        sent = await platform.router.send(home, name, request)
        if sent is not None:
            return sent
    try:
        # (From memory without a coroutine when cached: every warm call.)
        version = platform.functions.cached(name, pinned) or await platform.functions.resolve(
            name, pinned
        )
        # Who may call, and from which origins, is the function's (its active version's): a
        # pinned older version deployed before the function turned private stays private.
        access = (
            version.config if pinned is None else (await platform.functions.resolve(name)).config
        )
    except FunctionNotFound:
        where = "" if namespace == DEFAULT_NAMESPACE else f" --namespace {namespace}"
        return error_response(
            404,
            "function_not_found",
            f'function "{shown_name(name)}" not found; deploy it with: '
            f"fn{where} deploy {parsed[0]}.py",
        )
    except VersionNotFound:
        return error_response(
            404,
            "version_not_found",
            f'function "{shown_name(name)}" has no version {pinned}; list them with: '
            f"fn versions {parsed[0]}",
        )
    except DatabaseUnavailable as exc:
        log.warning("cannot resolve %s: %s", name, exc)
        return error_response(
            503,
            "database_unavailable",
            f'function "{name}" is not cached here and the database is unavailable ({exc}); '
            "retry shortly",
            headers={"Retry-After": "1"},
        )
    if access.cors_origins:  # (public functions without CORS: two attribute reads, no more)
        return await cors.answer(
            request,
            access.cors_origins,
            lambda r: _serve(platform, r, version, pinned, access.auth),
        )
    return await _serve(platform, request, version, pinned, access.auth)


async def _serve(
    platform: Platform, request: web.Request, version: Version, pinned: int | None, auth: str
) -> web.StreamResponse:
    private = auth != "public"
    if private:
        refusal = invoke_refusal(
            platform, request.headers.get("Authorization", ""), version.function
        )
        if refusal is not None:
            return refusal
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return payload_too_large(platform.settings.max_body_bytes)
    if "respond-async" in request.headers.get("Prefer", ""):
        return await submit_async(platform, request, version, pinned, body)
    try:
        return await _call(platform, request, version, body, strip_credentials=private)
    except Exception:
        log.exception("call failed", extra={"function": version.function})
        return error_response(500, "internal_error", "internal error; see the gateway's logs")


MAX_IDEMPOTENCY_KEY = 255


async def submit_async(
    platform: Platform, request: web.Request, version: Version, pinned: int | None, body: bytes
) -> web.Response:
    """`Prefer: respond-async`: commit the call to the delivery queue, then answer 202 with
    the activation id. An `Idempotency-Key` already used for this function returns the id of
    the first submission instead of queueing the call again."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        return error_response(
            400,
            "bad_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters",
        )
    delivery = NewDelivery(
        id=new_activation_id(),
        function=version.function,
        version=pinned,
        payload=body,
        meta=_stored_meta(request),
        idempotency_key=_text(key) if key is not None else None,
    )
    try:
        activation_id, created = await platform.events.submitter.submit(delivery)
    except DatabaseUnavailable as exc:
        log.warning("cannot accept an async call: %s", exc)
        return error_response(
            503,
            "database_unavailable",
            f"the call was not accepted: the database is unavailable ({exc}); retry shortly",
            headers={"Retry-After": "1"},
        )
    except Exception:
        log.exception("cannot accept an async call", extra={"function": version.function})
        return error_response(
            500,
            "internal_error",
            "the call was not accepted (internal error; see the gateway's logs)",
        )
    return json_response(
        {
            "activation_id": str(activation_id),
            "status": "accepted" if created else "duplicate",
            "function": split_name(version.function)[1],
            "namespace": split_name(version.function)[0],
        },
        status=202,
        headers={
            "Location": f"/v1/activations/{activation_id}",
            "Preference-Applied": "respond-async",
            "X-Ember-Activation-Id": str(activation_id),
        },
    )


def request_meta(request: web.Request) -> RequestMeta:
    """What the handler's context shows of the HTTP request."""
    received = request.headers
    headers = [(k, v if v.isascii() else _text(v)) for k, v in received.items()]
    if "Content-Encoding" in received:  # the body was decompressed on the way in
        headers = [h for h in headers if h[0].lower() not in _DECODED]
    if HOP_PROOF_HEADER in received:  # the peers' secret (gateway/routing.py), or a forgery
        headers = [h for h in headers if h[0].lower() != _HOP_PROOF]
    return {
        "method": request.method,
        "path": _text("/" + request.match_info.get("tail", "")),
        "query": _text(request.rel_url.raw_query_string),  # as sent: a decoded one is ambiguous
        "headers": headers,
        "content_type": _text(received.get("Content-Type", "")),
        "client": request.remote or "",
    }


_DECODED = frozenset({"content-encoding", "content-length"})
_HOP_PROOF = HOP_PROOF_HEADER.lower()


# Credentials of the caller are not kept in the queue (days, or until a dead letter is
# redriven): an async handler does not see them.
_NOT_STORED = frozenset({"authorization", "proxy-authorization", "cookie"})


def _stored_meta(request: web.Request) -> RequestMeta:
    """`request_meta` as kept with an async call: no NUL (Postgres refuses it in jsonb), no
    credentials."""
    meta = request_meta(request)
    return {
        "method": meta["method"],
        "path": no_nul(meta["path"]),
        "query": no_nul(meta["query"]),
        "headers": [(k, no_nul(v)) for k, v in meta["headers"] if k.lower() not in _NOT_STORED],
        "content_type": no_nul(meta["content_type"]),
        "client": meta["client"],
    }


async def _call(
    platform: Platform,
    request: web.Request,
    version: Version,
    body: bytes,
    *,
    strip_credentials: bool = False,
) -> web.StreamResponse:
    activation_id = new_activation_id()
    shown_id = str(activation_id)
    meta = request_meta(request)
    if strip_credentials:  # the platform's key is not the function's to see
        meta["headers"] = [h for h in meta["headers"] if h[0].lower() != "authorization"]
    result = await execute(platform.calls, version, activation_id, meta, body, shown_id=shown_id)
    if result.status == "success":
        # The headers in one list: the response builds its multidict from it once.
        headers = [
            (k, v)
            for k, v in result.headers
            if (low := k.lower()) not in _NOT_PASSED
            and (low != "set-cookie" or not _DASHBOARD_COOKIE.search(v))
        ]
        headers.append(("X-Ember-Activation-Id", shown_id))
        headers.append(("X-Ember-Version", str(version.version)))
        return web.Response(status=result.http_status, body=result.body, headers=headers)
    if result.status == "throttled":
        assert result.retry_after_s is not None
        return error_response(
            result.http_status,
            result.code,
            result.message,
            headers={"Retry-After": str(round(result.retry_after_s))},
        )
    extra = {"X-Ember-Activation-Id": shown_id, "X-Ember-Version": str(version.version)}
    fields = (
        {"type": result.error.get("type", "Error")}
        if result.status == "error" and result.error
        else {}
    )
    return error_response(
        result.http_status,
        result.code,
        result.message,
        activation_id=shown_id,
        headers=extra,
        **fields,
    )


def _text(value: str) -> str:
    """Header and path text as valid UTF-8 (aiohttp keeps undecodable bytes as surrogates)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
