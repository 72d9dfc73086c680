"""`/fn/{name}`: the call path. Resolve the version from memory, take a warm slot, forward the
body as bytes, map the outcome to HTTP, and queue the activation record."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.activations import new_activation_id
from gateway.errors import error_response, json_response, payload_too_large
from gateway.platform import PLATFORM, Platform
from invoker.protocol import ReplyTooLarge
from scheduler.scheduler import InstanceLost, Lease, QueueFull, QueueTimeout, StartFailed
from store import (
    Activation,
    ActivationId,
    DatabaseUnavailable,
    FunctionNotFound,
    NewDelivery,
    Version,
    VersionNotFound,
)

log = logging.getLogger("ember.gateway.invoke")

MAX_LOG_CHARS = 64 * 1024 + 1024
"""Logs and error texts kept per call (the runtime's 64 KiB capture, and its note)."""
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


def _parse_target(target: str) -> tuple[str, int | None]:
    name, sep, pin = target.partition(":")
    if not sep:
        return name, None
    if not pin.isdigit():
        raise web.HTTPBadRequest(text="")  # replaced by the caller's error response
    return name, int(pin)


async def invoke(request: web.Request) -> web.StreamResponse:
    platform = request.app[PLATFORM]
    target = request.match_info["name"]
    try:
        name, pinned = _parse_target(target)
    except web.HTTPBadRequest:
        return error_response(
            400,
            "bad_version",
            f'"{target}" is not NAME or NAME:VERSION (a version number, like hello:3)',
        )
    try:
        version = await platform.functions.resolve(name, pinned)
    except FunctionNotFound:
        return error_response(
            404,
            "function_not_found",
            f'function "{name}" not found; deploy it with: fn deploy {name}.py',
        )
    except VersionNotFound:
        return error_response(
            404,
            "version_not_found",
            f'function "{name}" has no version {pinned}; list them with: fn versions {name}',
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return payload_too_large(platform.settings.max_body_bytes)
    if "respond-async" in request.headers.get("Prefer", ""):
        return await submit_async(platform, request, version, pinned, body)
    try:
        return await _call(platform, request, version, body)
    except Exception:
        log.exception("call failed", extra={"function": name})
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
        activation_id, created = await platform.submitter.submit(delivery)
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
            "function": version.function,
        },
        status=202,
        headers={
            "Location": f"/v1/activations/{activation_id}",
            "Preference-Applied": "respond-async",
            "X-Ember-Activation-Id": str(activation_id),
        },
    )


def request_meta(request: web.Request) -> dict[str, Any]:
    """What the handler's context shows of the HTTP request."""
    return {
        "method": request.method,
        "path": _text("/" + request.match_info.get("tail", "")),
        "query": _text(request.query_string),
        "headers": [(k, _text(v)) for k, v in request.headers.items()],
        "content_type": _text(request.headers.get("Content-Type", "")),
    }


# Credentials of the caller are not kept in the queue (days, or until a dead letter is
# redriven): an async handler does not see them.
_NOT_STORED = frozenset({"authorization", "proxy-authorization", "cookie"})


def _stored_meta(request: web.Request) -> dict[str, Any]:
    """`request_meta` as kept with an async call: no NUL (Postgres refuses it in jsonb), no
    credentials."""
    meta = request_meta(request)
    meta["headers"] = [(k, _no_nul(v)) for k, v in meta["headers"] if k.lower() not in _NOT_STORED]
    for key in ("path", "query", "content_type"):
        meta[key] = _no_nul(meta[key])
    return meta


async def _call(
    platform: Platform, request: web.Request, version: Version, body: bytes
) -> web.StreamResponse:
    activation_id = new_activation_id()
    meta = request_meta(request)
    result = await execute(platform, version, activation_id, meta, body)
    if result.status == "success":
        response = web.Response(status=result.http_status, body=result.body)
        for key, value in result.headers:
            if key.lower() not in _HOP_BY_HOP:
                response.headers.add(key, value)
        response.headers.update(
            {"X-Ember-Activation-Id": str(activation_id), "X-Ember-Version": str(version.version)}
        )
        return response
    if result.status == "throttled":
        assert result.retry_after_s is not None
        return error_response(
            result.http_status,
            result.code,
            result.message,
            headers={"Retry-After": str(round(result.retry_after_s))},
        )
    extra = {"X-Ember-Activation-Id": str(activation_id), "X-Ember-Version": str(version.version)}
    fields = (
        {"type": result.error.get("type", "Error")}
        if result.status == "error" and result.error
        else {}
    )
    return error_response(
        result.http_status,
        result.code,
        result.message,
        activation_id=str(activation_id),
        headers=extra,
        **fields,
    )


@dataclass(slots=True)
class CallResult:
    """How one call ended, for the HTTP caller or the delivery worker.

    `status` is that of the activation record: success, error, timeout, crashed, start_failed,
    or throttled (no capacity: nothing ran, no record)."""

    status: str
    http_status: int
    body: bytes = b""
    headers: list[list[str]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    code: str = ""
    message: str = ""
    logs: str = ""
    cold: bool = False
    retry_after_s: float | None = None


async def execute(
    platform: Platform,
    version: Version,
    activation_id: ActivationId,
    meta: dict[str, Any],
    body: bytes,
) -> CallResult:
    """Run one activation of `version` on a warm slot: the path every call takes."""
    metrics = platform.metrics
    name = version.function
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    timeout_s = version.config.timeout_s

    def record(
        status: str, http_status: int, error: dict[str, Any] | None, logs: str, cold: bool
    ) -> None:
        elapsed = time.perf_counter() - t0
        metrics.observe_call(name, status, elapsed, cold)
        platform.activations.add(
            Activation(
                id=activation_id,
                function=name,
                version=version.version,
                started_at=started_at,
                duration_ms=elapsed * 1000,
                cold=cold,
                status=status,
                http_status=http_status,
                error=error,
                logs=logs,
            )
        )

    try:
        lease = await platform.scheduler.acquire(version)
    except QueueFull as exc:
        metrics.invocations.labels(name, "throttled").inc()
        return CallResult(
            "throttled", 429, code="queue_full", message=str(exc), retry_after_s=exc.retry_after_s
        )
    except QueueTimeout as exc:
        metrics.invocations.labels(name, "throttled").inc()
        return CallResult("throttled", 503, code="no_capacity", message=str(exc), retry_after_s=1.0)
    except StartFailed as exc:
        error = {"type": exc.error.get("type", "StartFailed"), "message": str(exc)}
        logs = _no_nul(exc.logs + exc.error.get("traceback", ""))
        record("start_failed", 502, error, logs, True)
        return CallResult(
            "start_failed",
            502,
            error=error,
            code="start_failed",
            message=f'function "{name}" could not start: {exc}',
            logs=logs,
            cold=True,
        )
    except InstanceLost as exc:
        error = {"type": "InstanceLost", "message": str(exc)}
        record("crashed", 502, error, "", False)
        return CallResult("crashed", 502, error=error, code="instance_died", message=str(exc))

    meta["op"] = "invoke"
    meta["id"] = str(activation_id)
    meta["timeout_s"] = timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            reply, out = await lease.connection.call(meta, body)
    except ReplyTooLarge as exc:
        await platform.scheduler.discard(lease, "reply over the limit")
        error = {"type": "ResponseTooLarge", "message": str(exc)}
        record("error", 502, error, "", lease.cold)
        return CallResult(
            "error",
            502,
            error=error,
            code="response_too_large",
            message=f'function "{name}" returned too large a response: {exc}; '
            "the instance was replaced",
            cold=lease.cold,
        )
    except BaseException as exc:
        if not isinstance(exc, TimeoutError | ConnectionError):
            # Cancelled (client gone, shutdown) or a bug: the instance's state is unknown, so
            # it is replaced; done in a task of its own so that the cancellation cannot stop it.
            platform.scheduler.discard_soon(lease, f"call interrupted: {exc!r}")
            raise
        return await _failed(platform, version, lease, exc, record)
    platform.scheduler.release(lease)
    logs = _capped(reply.get("logs", ""))
    if not reply.get("ok"):
        error = {
            str(k)[:100]: _capped(v) if isinstance(v, str) else v
            for k, v in list((reply.get("error") or {}).items())[:20]
        }
        status = reply.get("status", 500)
        if not isinstance(status, int) or not 400 <= status <= 599:
            status = 500  # (an error is an error, whatever a forged reply says)
        code = "bad_request" if status == 400 else "handler_error"
        if error.get("type") == "ResponseTooLarge":
            status, code = 502, "response_too_large"
        record("error", status, error, logs, lease.cold)
        return CallResult(
            "error",
            status,
            error=error,
            code=code,
            message=error.get("message", ""),
            logs=logs,
            cold=lease.cold,
        )
    status = reply.get("status", 200)
    if not isinstance(status, int) or not 200 <= status <= 599:
        # The runtime refuses these; an instance that writes its own reply frame does not.
        error = {
            "type": "InvalidResponse",
            "message": f"the handler answered with status {str(status)[:20]!r}; "
            "a response status must be 200-599",
        }
        record("error", 502, error, logs, lease.cold)
        return CallResult(
            "error",
            502,
            error=error,
            code="invalid_response",
            message=error["message"],
            logs=logs,
            cold=lease.cold,
        )
    record("success", status, None, logs, lease.cold)
    return CallResult(
        "success", status, body=out, headers=reply.get("headers", []), logs=logs, cold=lease.cold
    )


Record = Callable[[str, int, "dict[str, Any] | None", str, bool], None]


async def _failed(
    platform: Platform, version: Version, lease: Lease, exc: BaseException, record: Record
) -> CallResult:
    """The instance overran its timeout or died mid-call: replace it, tell the caller."""
    name, timeout_s = version.function, version.config.timeout_s
    if isinstance(exc, TimeoutError):
        await platform.scheduler.discard(lease, "call timed out")
        message = (
            f'function "{name}" did not finish within its timeout of {timeout_s:g}s; '
            f"the instance was replaced. Raise the limit with: "
            f"fn deploy {version.filename} --timeout {max(timeout_s * 2, 1):g}s"
        )
        error = {"type": "Timeout", "message": message}
        record("timeout", 504, error, "", lease.cold)
        return CallResult(
            "timeout", 504, error=error, code="timeout", message=message, cold=lease.cold
        )
    how = await platform.scheduler.discard(lease, "died during a call", wait_exit_s=1.0)
    message = f'the instance running "{name}" exited during the call ({how}); it has been replaced'
    error = {"type": "InstanceDied", "message": message}
    record("crashed", 502, error, "", lease.cold)
    return CallResult(
        "crashed", 502, error=error, code="instance_died", message=message, cold=lease.cold
    )


def _text(value: str) -> str:
    """Header and path text as valid UTF-8 (aiohttp keeps undecodable bytes as surrogates)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _capped(text: Any) -> str:
    """What an instance reports, as the platform stores it: text, at most `MAX_LOG_BYTES`
    (the runtime caps it there; an instance that forges its reply gets no more), no NUL."""
    text = text if isinstance(text, str) else str(text)
    if len(text) > MAX_LOG_CHARS:
        text = text[:MAX_LOG_CHARS] + f"\n[truncated at {MAX_LOG_CHARS} characters]\n"
    return _no_nul(text)


def _no_nul(text: str) -> str:
    """Postgres text cannot hold NUL characters: show them instead of losing the record."""
    return text.replace("\x00", "\\0") if "\x00" in text else text
