"""Run one activation of a function version on a warm slot: the path every call takes, HTTP or
queued. `execute` takes the slot, forwards the body as bytes, and turns how the call ended into
a `CallResult`; the activation record and the metrics are written on the way out."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from calls.activations import ActivationWriter
from calls.functions import FunctionCache
from calls.metrics import Metrics
from invoker.protocol import InvokeRequest, ReplyTooLarge, RequestMeta
from scheduler.scheduler import (
    AtCapacity,
    InstanceLost,
    Lease,
    QueueFull,
    QueueTimeout,
    Scheduler,
    StartFailed,
)
from store import Activation, ActivationId, Version

log = logging.getLogger("ember.gateway.invoke")

MAX_LOG_CHARS = 64 * 1024 + 1024
"""Logs and error texts kept per call (the runtime's 64 KiB capture, and its note)."""


CallStatus = Literal["success", "error", "timeout", "crashed", "start_failed", "throttled"]


@dataclass(slots=True, frozen=True, kw_only=True)
class CallPath:
    """The parts a call goes through, handed to the HTTP handlers and the delivery workers."""

    scheduler: Scheduler
    functions: FunctionCache
    activations: ActivationWriter
    metrics: Metrics


@dataclass(slots=True)
class CallResult:
    """How one call ended, for the HTTP caller or the delivery worker.

    `status` is that of the activation record: success, error, timeout, crashed, start_failed,
    or throttled (no capacity: nothing ran, no record); except that "success" means the
    handler answered, and its response goes to the caller as it is, whatever its status (a
    status of 400 or more is recorded as an error, "HTTP404")."""

    status: CallStatus
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
    calls: CallPath,
    version: Version,
    activation_id: ActivationId,
    meta: RequestMeta,
    body: bytes,
    *,
    shown_id: str | None = None,
) -> CallResult:
    """Run one activation of `version` on a warm slot: the path every call takes.
    `shown_id`: `str(activation_id)`, when the caller has it already."""
    metrics = calls.metrics
    name = version.function
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    timeout_s = version.config.timeout_s

    def record(
        status: CallStatus, http_status: int, error: dict[str, Any] | None, logs: str, cold: bool
    ) -> None:
        elapsed = time.perf_counter() - t0
        metrics.observe_call(name, status, elapsed, cold)
        calls.activations.add(
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
        lease = await calls.scheduler.acquire(version)
    except QueueFull as exc:
        metrics.invocations.labels(name, "throttled").inc()
        return CallResult(
            "throttled", 429, code="queue_full", message=str(exc), retry_after_s=exc.retry_after_s
        )
    except QueueTimeout as exc:
        metrics.invocations.labels(name, "throttled").inc()
        return CallResult("throttled", 503, code="no_capacity", message=str(exc), retry_after_s=1.0)
    except AtCapacity as exc:
        metrics.invocations.labels(name, "throttled").inc()
        return CallResult(
            "throttled", 503, code="at_capacity", message=str(exc), retry_after_s=exc.retry_after_s
        )
    except StartFailed as exc:
        error: dict[str, Any] = {
            "type": exc.error.get("type", "StartFailed"),
            "message": str(exc),
        }
        logs = no_nul(exc.logs + exc.error.get("traceback", ""))
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

    request: InvokeRequest = {
        **meta,
        "op": "invoke",
        "id": shown_id or str(activation_id),
        "timeout_s": timeout_s,
    }
    try:
        reply, out = await lease.connection.call(request, body, timeout_s=timeout_s)
    except ReplyTooLarge as exc:
        await calls.scheduler.discard(lease, "reply over the limit")
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
            calls.scheduler.discard_soon(lease, f"call interrupted: {exc!r}")
            raise
        return await _failed(calls, version, lease, exc, record)
    calls.scheduler.release(lease)
    logs = capped(reply.get("logs", ""))
    if not reply.get("ok"):
        error = {
            str(k)[:100]: capped(v) if isinstance(v, str) else v
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
    headers = reply.get("headers", [])
    invalid = None
    if not isinstance(status, int) or not 200 <= status <= 599:
        # The runtime refuses these; an instance that writes its own reply frame does not.
        invalid = (
            f"the handler answered with status {str(status)[:20]!r}; "
            "a response status must be 200-599"
        )
    else:
        invalid = bad_headers(headers)
    if invalid is not None:
        error = {"type": "InvalidResponse", "message": invalid}
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
    if status >= 400:  # the handler's own error response: passed on, recorded as an error
        error = {
            "type": f"HTTP{status}",
            "message": no_nul(out[:1000].decode("utf-8", "replace")),
        }
        record("error", status, error, logs, lease.cold)
    else:
        record("success", status, None, logs, lease.cold)
    return CallResult("success", status, body=out, headers=headers, logs=logs, cold=lease.cold)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def bad_headers(headers: Any) -> str | None:
    """Why a handler's response headers cannot go out (a name that is not an HTTP token, a
    line break or control character in a value: response splitting), or None."""
    if not isinstance(headers, list):
        return "the handler's response headers are not a list of [name, value] pairs"
    for pair in headers:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            return f"the handler's response header {str(pair)[:60]!r} is not a [name, value] pair"
        name, value = pair
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            return (
                f"the handler's response has a header named {str(name)[:60]!r}, which is not "
                "a valid HTTP header name"
            )
        if not isinstance(value, str) or not _FIELD_VALUE.fullmatch(value):
            return (
                f"the handler's response header {name} has a line break or control character "
                f"in its value {str(value)[:60]!r}"
            )
    return None


Record = Callable[[CallStatus, int, "dict[str, Any] | None", str, bool], None]


async def _failed(
    calls: CallPath, version: Version, lease: Lease, exc: BaseException, record: Record
) -> CallResult:
    """The instance overran its timeout or died mid-call: replace it, tell the caller."""
    name, timeout_s = version.function, version.config.timeout_s
    if isinstance(exc, TimeoutError):
        await calls.scheduler.discard(lease, "call timed out")
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
    how = await calls.scheduler.discard(lease, "died during a call", wait_exit_s=1.0)
    message = f'the instance running "{name}" exited during the call ({how}); it has been replaced'
    error = {"type": "InstanceDied", "message": message}
    record("crashed", 502, error, "", lease.cold)
    return CallResult(
        "crashed", 502, error=error, code="instance_died", message=message, cold=lease.cold
    )


def capped(text: Any) -> str:
    """What an instance reports, as the platform stores it: text, at most `MAX_LOG_BYTES`
    (the runtime caps it there; an instance that forges its reply gets no more), no NUL."""
    text = text if isinstance(text, str) else str(text)
    if len(text) > MAX_LOG_CHARS:
        text = text[:MAX_LOG_CHARS] + f"\n[truncated at {MAX_LOG_CHARS} characters]\n"
    return no_nul(text)


def no_nul(text: str) -> str:
    """Postgres text cannot hold NUL characters: show them instead of losing the record."""
    return text.replace("\x00", "\\0") if "\x00" in text else text
