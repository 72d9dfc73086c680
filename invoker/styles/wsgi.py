"""WSGI apps as functions (PEP 3333): Flask, Django, Bottle, Falcon..., and the WSGI machinery
the fission and gcf styles serve their Flask apps through.

Each call becomes one PEP 3333 request:

    REQUEST_METHOD   the method (events: POST)
    SCRIPT_NAME      /fn/NAME, so that the app's own URLs (url_for, reverse) point back at it
    PATH_INFO        the sub-path after /fn/NAME (decoded, as PEP 3333 wants it)
    QUERY_STRING     the query, percent-encoded
    CONTENT_TYPE, CONTENT_LENGTH   the body's, when it has one (it is read whole: no chunked
                     input, and decompressed: no Content-Encoding)
    HTTP_*           each header; repeated ones joined with ", " (Cookie with "; "); names
                     with "_" are dropped (they would pass for their "-" twins, as in gunicorn)
    SERVER_NAME/PORT from Host (localhost:80 without one, as for events)
    wsgi.url_scheme  X-Forwarded-Proto when it says http or https, else http
    wsgi.input       the body; wsgi.errors: the activation's log

The response is collected whole: start_response (exc_info replaces a response not yet sent:
none is sent before the app is done), what write() was given, then the iterable, whose
close() is always called. Repeated headers (Set-Cookie) are kept. An exception from the app is
the function's error (500, traceback in the activation's log); an app that catches its own
(Flask does) returns its 500, which is recorded as an error too.

The entry point (`--wsgi module:app`) is the app, or a factory that takes no argument and
returns it (`--wsgi app:create_app`, as Flask's application factories are written): it is
called once, when the instance is specialized.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from invoker.styles import (
    BindInfo,
    Bound,
    Incoming,
    Outgoing,
    ResponseTooLarge,
    StyleMismatch,
    mismatch,
)
from invoker.styles.native import describe, positional_arity

SIGNATURE = (
    "a WSGI app: app(environ, start_response), like Flask(...) or get_wsgi_application(), "
    "or a factory that takes no argument and returns one (create_app)"
)

WsgiApp = Callable[[dict[str, Any], Callable[..., Callable[[bytes], object]]], Iterable[bytes]]

_SKIPPED = frozenset({"content-type", "content-length", "transfer-encoding", "content-encoding"})
"""Headers that do not become HTTP_*: the body arrives whole and decoded, its type and length
are CONTENT_TYPE and CONTENT_LENGTH."""
_QUERY_SAFE = "!$&'()*+,-./:;=?@[]_~%"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def bind(target: Any, info: BindInfo) -> Bound:
    app = wsgi_app(target, info.entry)
    return serve(app, info.function, info.max_response_bytes)


def wsgi_app(target: Any, entry: str) -> WsgiApp:
    """The app `target` is, or the one its factory returns; StyleMismatch otherwise."""
    arity = positional_arity(target)
    if arity is None:
        if callable(target):
            return target  # type: ignore[no-any-return]
        raise mismatch("wsgi", describe(target, entry), SIGNATURE)
    required, most = arity
    if required == 0 and most >= 0 and not hasattr(target, "wsgi_app"):
        app = target()  # a factory: create_app()
        if not _takes_two(app):
            raise StyleMismatch(
                f"{entry}() returned a {type(app).__name__}, not a WSGI app; the wsgi style "
                f"expects {SIGNATURE}"
            )
        return app  # type: ignore[no-any-return]
    if not _takes_two(target):
        raise mismatch("wsgi", describe(target, entry), SIGNATURE)
    return target  # type: ignore[no-any-return]


def _takes_two(app: Any) -> bool:
    arity = positional_arity(app)
    if arity is None:
        return callable(app)
    required, most = arity
    return most != -2 and required <= 2 and (most == -1 or most >= 2)


def serve(app: WsgiApp, function: str, limit: int = 0) -> Bound:
    """A Bound that runs each call through `app` (sync: the runtime puts it in a thread when
    the function's concurrency is above 1); a response past `limit` bytes (0: none) stops."""
    base = {
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "SCRIPT_NAME": "/fn/" + function,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "ember",
    }

    def run(call: Incoming) -> Outgoing:
        return call_app(app, environ(call, base), limit)

    return Bound(run=run, is_async=False)


def environ(call: Incoming, base: dict[str, Any]) -> dict[str, Any]:
    """The PEP 3333 environ of one call (`base`: what is the same for every call)."""
    env = base.copy()
    framed = False  # the request said how long its body is (a GET usually does not)
    for name, value in call.headers:
        lowered = name.lower()
        if lowered in _SKIPPED:
            framed = framed or lowered != "content-type"
            continue
        if "_" in name:
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        if not value.isascii():
            value = _native(value)
        if key in env:
            env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            env[key] = value
    path = call.path or "/"
    query = call.query
    if not query.isascii() or " " in query:
        query = quote(query, safe=_QUERY_SAFE)
    body = call.body
    scheme = env.get("HTTP_X_FORWARDED_PROTO", "http").split(",", 1)[0].strip().lower()
    if scheme not in _DEFAULT_PORTS:
        scheme = "http"
    host = env.get("HTTP_HOST", "")
    name, sep, port = host.rpartition(":")
    if not sep or "]" in port:
        name, port = host, ""
    env.update(
        {
            "REQUEST_METHOD": "POST" if call.is_event else call.method,
            "PATH_INFO": path if path.isascii() else _native(path),
            "QUERY_STRING": query,
            "SERVER_NAME": name.strip("[]") or "localhost",
            "SERVER_PORT": port or _DEFAULT_PORTS[scheme],
            "wsgi.url_scheme": scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,  # the runtime routes it to the activation's log
        }
    )
    if call.client:
        env["REMOTE_ADDR"] = call.client  # the gateway's peer (not X-Forwarded-For)
    if body or framed:
        env["CONTENT_LENGTH"] = str(len(body))
    if call.content_type:
        env["CONTENT_TYPE"] = call.content_type
    return env


def _native(text: str) -> str:
    """A WSGI "native string": the UTF-8 bytes of `text` as Latin-1 (PEP 3333)."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def call_app(app: WsgiApp, env: dict[str, Any], limit: int = 0) -> Outgoing:
    """Run `app` on `env` and collect its whole response; ResponseTooLarge at the chunk that
    takes it past `limit` bytes (0: no limit), the iterable closed."""
    chunks: list[bytes] = []
    started: list[Any] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        if started and exc_info is None:
            raise AssertionError("start_response was called twice without exc_info (PEP 3333)")
        # With exc_info the app replaces its response: nothing is sent before it returns, so
        # there is never a sent one to re-raise for.
        started[:] = [status, headers]
        return chunks.append

    result = app(env, start_response)
    if result is None:
        raise TypeError("the WSGI app returned None, not an iterable of bytes (PEP 3333)")
    try:
        size = 0
        for chunk in result:
            if chunk:
                size += len(chunk)
                if 0 < limit < size:
                    raise ResponseTooLarge(size, limit)
                chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI app returned without calling start_response (PEP 3333)")
    status_line, headers = started
    try:
        status = int(str(status_line)[:3])
    except ValueError:
        raise ValueError(f"the WSGI app gave the status {status_line!r}, not '200 OK'") from None
    if not 200 <= status <= 599:
        raise ValueError(f"the WSGI app gave the status {status_line!r}; Ember answers 200-599")
    try:
        body = b"".join(chunks)
    except TypeError:
        kinds = sorted({type(c).__name__ for c in chunks if not isinstance(c, bytes)})
        raise TypeError(
            f"the WSGI app's body held {', '.join(kinds)}, not bytes (PEP 3333): encode it"
        ) from None
    return status, [[str(k), str(v)] for k, v in headers], body
