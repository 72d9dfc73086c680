"""What a handler sees: the `context` argument, `Response`, and per-activation output capture.

Output is captured per activation with a context variable, so `print`, `sys.stderr` and `logging`
inside a handler (and in threads it starts with a copied context) land in that activation's logs.
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

MAX_LOG_BYTES = 64 * 1024


class Capture:
    """The log buffer of one activation, truncated past `max_bytes`."""

    __slots__ = ("_parts", "_size", "max_bytes", "truncated")

    def __init__(self, max_bytes: int = MAX_LOG_BYTES) -> None:
        self._parts: list[str] = []
        self._size = 0
        self.max_bytes = max_bytes
        self.truncated = False

    def write(self, text: str) -> None:
        if self._size >= self.max_bytes:
            self.truncated = True
            return
        self._parts.append(text)
        self._size += len(text)

    def text(self) -> str:
        out = "".join(self._parts)
        if not out.isascii():  # lone surrogates cannot be sent as JSON: replace them
            out = out.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        if self.truncated or len(out) > self.max_bytes:
            out = out[: self.max_bytes] + f"\n[logs truncated at {self.max_bytes} bytes]\n"
        return out


current_capture: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "ember_capture", default=None
)


class _ActivationStream(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: writes to the current activation, else through."""

    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback

    def write(self, text: str) -> int:
        capture = current_capture.get()
        if capture is None:
            return self._fallback.write(text)
        capture.write(text)
        return len(text)

    def flush(self) -> None:
        if current_capture.get() is None:
            self._fallback.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fallback.fileno()


class _CaptureHandler(logging.Handler):
    def __init__(self, fallback: TextIO) -> None:
        super().__init__()
        self._fallback = fallback
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        capture = current_capture.get()
        if capture is None:
            self._fallback.write(line)
        else:
            capture.write(line)


def install_capture() -> None:
    """Route stdout, stderr and logging through the per-activation capture (once: a fork of
    a template has it already)."""
    if isinstance(sys.stdout, _ActivationStream):
        return
    real_stderr = sys.__stderr__ or sys.stderr
    sys.stdout = _ActivationStream(sys.stdout)
    sys.stderr = _ActivationStream(real_stderr)
    root = logging.getLogger()
    root.handlers[:] = [_CaptureHandler(real_stderr)]
    root.setLevel(logging.INFO)


class PermanentError(Exception):
    """Raise it (as `context.PermanentError`) when retrying an event cannot help, such as a
    malformed order: the event is dead-lettered at once instead of being retried."""


class RetryAfter(Exception):
    """Raise it (as `context.RetryAfter(30)`) to have the event retried no sooner than
    `seconds` from now, for example when a downstream service is rate-limiting."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"retry after {seconds:g}s")
        self.seconds = float(seconds)


@dataclass(slots=True, kw_only=True)
class Response:
    """Return one from a handler to set the status code and headers yourself."""

    body: Any = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


_FUNCTION_LOGGER = logging.getLogger("function")
"""`context.logger` (what `getLogger("function")` returns, without its lock on every call)."""


@dataclass(slots=True, kw_only=True)
class Context:
    """The second argument of every handler."""

    function: str
    version: int
    activation_id: str
    deadline: float
    method: str = "POST"
    path: str = "/"
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, str] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: _FUNCTION_LOGGER)
    source: str = "http"
    """Where the call comes from: http, async, topic, schedule, table, or a broker (nats,
    rabbitmq, redis, mqtt, kafka)."""
    topic: str = ""
    """An event's topic: the topic published to, or a broker message's subject, routing key,
    stream key or topic."""
    event_id: str = ""
    """An event's id, the same on every attempt (the delivery's id)."""
    message: Mapping[str, Any] = field(default_factory=dict)
    """A broker message's metadata: broker, trigger, and per broker the subject, stream and
    stream_seq (nats), exchange, routing_key, redelivered (rabbitmq), stream and id (redis),
    topic and qos (mqtt), partition and offset (kafka). Empty for other calls."""

    PermanentError = PermanentError
    RetryAfter = RetryAfter

    def remaining_s(self) -> float:
        """Seconds left before the platform stops waiting for this call."""
        return max(0.0, self.deadline - time.monotonic())

    @staticmethod
    def response(
        body: Any = b"", *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return Response(body=body, status=status, headers=dict(headers or {}))
