"""Handler styles: functions written for other platforms, run unchanged.

A style turns one call (`Incoming`: the HTTP request, or the event of a topic, schedule or
table) into what that platform hands its functions, runs the user's entry point, and maps what
it returns back to an HTTP response (`Outgoing`). Each style is a module of this package with

    SIGNATURE: str      what the style expects, for error messages ("def main(args) -> dict")
    bind(target, info: BindInfo) -> Bound
        check `target` (the object the entry point names) and return how to run it; raise
        `StyleMismatch` when it does not fit, saying what was found and what was expected.

Modules are imported when a style is first used: an Ember-style instance imports none of them.

Errors:
    StyleError
     ├── StyleMismatch   the entry point does not fit the style (refused at deploy)
     └── UnknownStyle    no such style
    BadRequest           the request cannot be turned into the style's input (HTTP 400)
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from invoker.context import Context
from invoker.protocol import STYLES as STYLES

STYLE_MODULES: dict[str, str] = {
    "ember": "native",
    "lambda": "aws_lambda",
    "openwhisk": "openwhisk",
    "openfaas": "openfaas",
    "fission": "fission",
    "gcf": "gcf",
    "knative": "knative",
    "asgi": "asgi",
    "wsgi": "wsgi",
}
assert tuple(STYLE_MODULES) == STYLES

Source = Literal["http", "async", "topic", "schedule", "table"]
"""Where a call comes from; a source not named here (a broker's) is an event too."""
HTTP_SOURCES = frozenset({"http", "async"})

Outgoing = tuple[int, list[list[str]], bytes]
"""(status, [[header, value], ...], body): what goes back to the caller."""


class StyleError(Exception):
    """A style cannot be used as asked."""


class StyleMismatch(StyleError, TypeError):
    """The entry point does not fit its style; the message names the style and the expected
    signature (and that --style overrides)."""


class UnknownStyle(StyleError, LookupError):
    pass


class ResponseTooLarge(Exception):
    """A response grew past the platform's limit (FN_MAX_RESPONSE) while it was collected."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the response grew past {limit} bytes ({size} so far), the limit (FN_MAX_RESPONSE)"
        )
        self.limit_bytes = limit


class BadRequest(ValueError):
    """The request cannot be turned into what the style's handler takes (answered with 400)."""


@dataclass(slots=True, kw_only=True)
class Incoming:
    """One call as a style sees it."""

    body: bytes
    method: str = "POST"
    path: str = "/"
    """The sub-path after /fn/NAME, starting with /."""
    query: str = ""
    """The raw query string, without '?'."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """As received, in order, repeated names kept."""
    content_type: str = ""
    client: str = ""
    """The address of the HTTP client as the gateway saw it (its TCP peer; empty for events).
    Not X-Forwarded-For, which any caller can write."""
    source: str = "http"
    """http: a direct call; async: an HTTP call queued with Prefer: respond-async (still an HTTP
    request); topic, schedule, table: an event, not an HTTP request."""
    topic: str = ""
    """The topic of a topic event (else empty)."""
    event_id: str = ""
    """A stable id of an event or async call across its attempts (else empty)."""
    event_time: str = ""
    """When the event or async call was submitted, ISO 8601 UTC (else empty)."""
    context: Context
    """Ember's context for the call: function, version, activation id, deadline, config."""

    @property
    def is_event(self) -> bool:
        return self.source not in HTTP_SOURCES

    def header(self, name: str, default: str = "") -> str:
        """The first value of a header, by case-insensitive name."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return default


@dataclass(slots=True, frozen=True, kw_only=True)
class BindInfo:
    """What a style may need to know of the function when it binds its entry point."""

    style: str
    entry: str
    """The entry point's name (attribute path) in the module, as given."""
    module: Any
    """The imported module."""
    function: str
    version: int
    memory_mb: int
    timeout_s: float
    options: Mapping[str, str] = field(default_factory=dict)
    """Style settings given at deploy (e.g. lambda's event: v2, v1, alb, url)."""
    max_response_bytes: int = 0
    """The largest response the platform takes (0: no limit): a style that collects a
    streamed response stops there."""


@dataclass(slots=True, kw_only=True)
class Bound:
    """A style bound to one entry point: `run` turns an Incoming into an Outgoing."""

    run: Callable[[Incoming], Any]
    """Returns an `Outgoing` (or, when is_async, an awaitable of one)."""
    is_async: bool
    """True: `run` is a coroutine function (run on the instance's loop); else it is called
    directly, or in a thread when the function's concurrency is above 1."""
    startup: Callable[[], Awaitable[None]] | None = None
    """Run once after binding, before the first call (an ASGI app's lifespan startup);
    an exception fails the specialization like an import error."""
    shutdown: Callable[[], Awaitable[None]] | None = None
    relabel: Callable[[int], None] | None = None
    """Called when the instance, checked at deploy as version 0, is given its version."""
    options: Mapping[str, str] = field(default_factory=dict)
    """The style's settings as bound, those it inferred included: stored with the version,
    so that the next instance binds the same way and `fn versions` shows them."""


def load(style: str) -> Any:
    """The module of a style."""
    try:
        name = STYLE_MODULES[style]
    except KeyError:
        raise UnknownStyle(f"unknown style {style!r}; one of: {', '.join(STYLES)}") from None
    return importlib.import_module(f"invoker.styles.{name}")


def bind(target: Any, info: BindInfo) -> Bound:
    """Bind `target` with `info.style`; raises StyleMismatch when it does not fit."""
    bound: Bound = load(info.style).bind(target, info)
    return bound


def mismatch(style: str, found: str, expected: str) -> StyleMismatch:
    """The error for an entry point that does not fit `style`."""
    return StyleMismatch(
        f"{found} does not fit the {style} style, which expects {expected}; "
        "give the right style with --style (one of: " + ", ".join(STYLES) + ")"
    )
