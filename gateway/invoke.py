"""`/fn/{name}`: the call path. Resolve the version from memory, take a warm slot, forward the
body as bytes, map the outcome to HTTP, and queue the activation record."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.activations import new_activation_id
from gateway.errors import error_response, payload_too_large
from gateway.platform import PLATFORM, Platform
from scheduler.scheduler import InstanceLost, Lease, QueueFull, QueueTimeout, StartFailed
from store import Activation, ActivationId, FunctionNotFound, Version, VersionNotFound

log = logging.getLogger("ember.gateway.invoke")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "upgrade", "te", "trailer", "proxy-authenticate", "proxy-authorization"})


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
        return error_response(400, "bad_version", f'"{target}" is not NAME or NAME:VERSION '
                              "(a version number, like hello:3)")
    try:
        version = await platform.functions.resolve(name, pinned)
    except FunctionNotFound:
        return error_response(404, "function_not_found",
                              f'function "{name}" not found; deploy it with: fn deploy {name}.py')
    except VersionNotFound:
        return error_response(404, "version_not_found",
                              f'function "{name}" has no version {pinned}; list them with: '
                              f"fn versions {name}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return payload_too_large(platform.settings.max_body_bytes)
    try:
        return await _call(platform, request, version, body)
    except Exception:
        log.exception("call failed", extra={"function": name})
        return error_response(500, "internal_error", "internal error; see the gateway's logs")


async def _call(platform: Platform, request: web.Request, version: Version,
                body: bytes) -> web.StreamResponse:
    metrics = platform.metrics
    name = version.function
    activation_id = new_activation_id()
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    timeout_s = version.config.timeout_s
    extra = {"X-Ember-Activation-Id": str(activation_id), "X-Ember-Version": str(version.version)}

    def record(status: str, http_status: int, error: dict[str, Any] | None, logs: str,
               cold: bool) -> None:
        elapsed = time.perf_counter() - t0
        metrics.observe_call(name, status, elapsed, cold)
        platform.activations.add(Activation(
            id=activation_id, function=name, version=version.version, started_at=started_at,
            duration_ms=elapsed * 1000, cold=cold, status=status, http_status=http_status,
            error=error, logs=logs))

    try:
        lease = await platform.scheduler.acquire(version)
    except QueueFull as exc:
        metrics.invocations.labels(name, "throttled").inc()
        return error_response(429, "queue_full", str(exc),
                              headers={"Retry-After": str(round(exc.retry_after_s))})
    except QueueTimeout as exc:
        metrics.invocations.labels(name, "throttled").inc()
        return error_response(503, "no_capacity", str(exc), headers={"Retry-After": "1"})
    except StartFailed as exc:
        error = {"type": exc.error.get("type", "StartFailed"), "message": str(exc)}
        record("start_failed", 502, error,
               _no_nul(exc.logs + exc.error.get("traceback", "")), True)
        return error_response(502, "start_failed",
                              f'function "{name}" could not start: {exc}',
                              activation_id=str(activation_id), headers=extra)
    except InstanceLost as exc:
        record("crashed", 502, {"type": "InstanceLost", "message": str(exc)}, "", False)
        return error_response(502, "instance_died", str(exc), activation_id=str(activation_id),
                              headers=extra)

    meta = {
        "op": "invoke", "id": str(activation_id), "timeout_s": timeout_s,
        "method": request.method, "path": _text("/" + request.match_info.get("tail", "")),
        "query": _text(request.query_string),
        "headers": [(k, _text(v)) for k, v in request.headers.items()],
        "content_type": _text(request.headers.get("Content-Type", "")),
    }
    try:
        async with asyncio.timeout(timeout_s):
            reply, out = await lease.connection.call(meta, body)
    except BaseException as exc:
        if not isinstance(exc, TimeoutError | ConnectionError):
            # Cancelled (client gone, shutdown) or a bug: the instance's state is unknown, so
            # it is replaced; done in a task of its own so that the cancellation cannot stop it.
            platform.scheduler.discard_soon(lease, f"call interrupted: {exc!r}")
            raise
        return await _failed(platform, version, lease, exc, record, activation_id, extra)
    platform.scheduler.release(lease)
    logs = _no_nul(reply.get("logs", ""))
    if not reply.get("ok"):
        error = {k: _no_nul(v) if isinstance(v, str) else v
                 for k, v in (reply.get("error") or {}).items()}
        status = int(reply.get("status", 500))
        record("error", status, error, logs, lease.cold)
        code = "bad_request" if status == 400 else "handler_error"
        return error_response(status, code, error.get("message", ""),
                              activation_id=str(activation_id), headers=extra,
                              type=error.get("type", "Error"))
    status = int(reply.get("status", 200))
    record("success", status, None, logs, lease.cold)
    response = web.Response(status=status, body=out)
    for key, value in reply.get("headers", ()):
        if key.lower() not in _HOP_BY_HOP:
            response.headers.add(key, value)
    response.headers.update(extra)
    return response


Record = Callable[[str, int, "dict[str, Any] | None", str, bool], None]


async def _failed(platform: Platform, version: Version, lease: Lease, exc: BaseException,
                  record: Record, activation_id: ActivationId,
                  extra: dict[str, str]) -> web.Response:
    """The instance overran its timeout or died mid-call: replace it, tell the caller."""
    name, timeout_s = version.function, version.config.timeout_s
    if isinstance(exc, TimeoutError):
        await platform.scheduler.discard(lease, "call timed out")
        message = (f'function "{name}" did not finish within its timeout of {timeout_s:g}s; '
                   f"the instance was replaced. Raise the limit with: "
                   f"fn deploy {version.filename} --timeout {max(timeout_s * 2, 1):g}s")
        record("timeout", 504, {"type": "Timeout", "message": message}, "", lease.cold)
        return error_response(504, "timeout", message, activation_id=str(activation_id),
                              headers=extra)
    how = await platform.scheduler.discard(lease, "died during a call", wait_exit_s=1.0)
    message = (f'the instance running "{name}" exited during the call ({how}); '
               "it has been replaced")
    record("crashed", 502, {"type": "InstanceDied", "message": message}, "", lease.cold)
    return error_response(502, "instance_died", message, activation_id=str(activation_id),
                          headers=extra)


def _text(value: str) -> str:
    """Header and path text as valid UTF-8 (aiohttp keeps undecodable bytes as surrogates)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _no_nul(text: str) -> str:
    """Postgres text cannot hold NUL characters: show them instead of losing the record."""
    return text.replace("\x00", "\\0") if "\x00" in text else text
