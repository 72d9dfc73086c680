"""ASGI apps served as functions: FastAPI, Starlette, Quart, Django's ASGI handler, Litestar, or
a bare `async def app(scope, receive, send)` (the ASGI 3 spec: the HTTP and lifespan scopes).

Each call is one HTTP connection scope. `receive` gives the whole body in one `http.request`
message (more_body False), then blocks until the response is complete and gives
`http.disconnect`, as a server does; `send` collects `http.response.start` and the
`http.response.body` chunks, joined into one response: Ember's wire protocol carries one reply
per call, so a streamed response (StreamingResponse, server-sent events) reaches the caller
whole, when the app has finished.

Where the app sits: it is mounted at /fn/NAME, so `root_path` is "/fn/NAME". Frameworks that read
the spec as "path includes root_path" (Starlette >= 0.35 and so FastAPI, Quart, Django,
Litestar: as uvicorn --root-path gives them) get path "/fn/NAME/sub/path" and strip the prefix
themselves; other apps (a bare app, old Starlette, Falcon, middleware comparing scope["path"])
get the sub-path alone, as when served at the root. Either way routes match and URLs the app
builds (url_for, FastAPI's /docs) carry the prefix.

Events (topic, schedule, table) arrive as a POST to "/" with the payload as the body and its
content type (a schedule's and a table's are JSON), plus x-ember-topic / x-ember-delivery-id /
x-ember-attempt headers, so a route like `@app.post("/")` takes them.

The entry point is the app (`--asgi main:app`, an attribute path like `api.app` allowed), an
ASGI 2 app (a class instantiated per scope), or a zero-argument factory returning one (what
uvicorn's --factory calls): a callable that takes no arguments is called once at bind. The
app's lifespan (startup, then shutdown when the instance stops) runs when the app supports it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from invoker.context import current_capture
from invoker.styles import (
    BindInfo,
    Bound,
    Incoming,
    Outgoing,
    ResponseTooLarge,
    StyleMismatch,
    mismatch,
)
from invoker.styles.detect import is_asgi, is_wsgi
from invoker.styles.native import describe, positional_arity

SIGNATURE = (
    "an ASGI app: async def app(scope, receive, send), an object whose __call__ is one "
    "(FastAPI, Starlette, Quart...), or a zero-argument factory returning one"
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_UNKNOWN_CLIENT = ("0.0.0.0", 0)
_SAFE_PATH = "/!$&'()*+,;=:@-._~"
_SAFE_QUERY = _SAFE_PATH + "?%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# What the gateway already undid: a body it decompressed, a chunked body it read whole.
_REPLACED = frozenset({"content-length", "transfer-encoding"})
_DECODED = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})
_SPEC_PATH_FRAMEWORKS = frozenset({"fastapi", "starlette", "quart", "django", "litestar"})


class NoResponse(RuntimeError):
    """The app returned without answering the request."""


class LifespanStartupFailed(RuntimeError):
    """The app's lifespan startup reported a failure."""


# ---- the request: scope, receive, send ----------------------------------------------------


def raw_path(path: str) -> bytes:
    """The path as it would be on the wire (Ember hands styles the decoded path)."""
    if path.isascii() and " " not in path and "%" not in path and "?" not in path:
        return path.encode()
    return quote(path, safe=_SAFE_PATH).encode()


def raw_query(query: str) -> bytes:
    """The query string as bytes, re-encoding what the gateway decoded (spaces, UTF-8, a "%"
    that was "%25": its escapes for "&", "=", "+" and "#" it keeps)."""
    if query.isascii() and " " not in query and "%" not in query:
        return query.encode()
    return quote(_LONE_PERCENT.sub("%25", query), safe=_SAFE_QUERY).encode()


def host_port(host: str, scheme: str) -> tuple[str, int]:
    """(host, port) from a Host header value; the scheme's port when it names none."""
    default = 443 if scheme == "https" else 80
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else default


def http_scope(
    call: Incoming, root_path: str, path_prefix: str, state: dict[str, Any] | None
) -> tuple[Scope, bytes]:
    """The HTTP connection scope of one call, and the body to give the app."""
    body = call.body
    headers: list[tuple[bytes, bytes]] = []
    # The client is the gateway's peer; X-Forwarded-For only when the gateway saw none (a
    # caller can write that header)
    scheme, host, client = "http", "", call.client
    had_length = False
    for key, value in call.headers:
        name = key.lower()
        if name in _REPLACED:
            had_length = True
            continue
        if name == "content-encoding" and value.strip().lower() in _DECODED:
            continue
        if name == "host":
            host = value
        elif name == "x-forwarded-proto":
            scheme = value.split(",", 1)[0].strip().lower() or "http"
        elif name == "x-forwarded-for" and not client:
            client = value.split(",", 1)[0].strip()
        elif name == "x-real-ip" and not client:
            client = value.strip()
        headers.append((name.encode(), value.encode()))
    if call.is_event:
        method, path, query = "POST", "/", ""
        if call.content_type:
            headers.append((b"content-type", call.content_type.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
    else:
        method, path, query = call.method.upper(), call.path or "/", call.query
        if body or had_length:
            headers.append((b"content-length", str(len(body)).encode()))
    full_path = path_prefix + path
    scope: Scope = {
        "type": "http",
        "asgi": _ASGI,
        "http_version": "1.1",
        "method": method,
        "scheme": scheme if scheme in ("http", "https") else "http",
        "path": full_path,
        "raw_path": raw_path(full_path),
        "root_path": root_path,
        "query_string": raw_query(query),
        "headers": headers,
        "client": (client, 0) if client else _UNKNOWN_CLIENT,
        "server": host_port(host, scheme) if host else None,
        "state": dict(state) if state else {},
    }
    return scope, body


_DISCONNECT: Message = {"type": "http.disconnect"}


async def exchange(
    app: App, scope: Scope, body: bytes, send_wrapper: Any = None, limit: int = 0
) -> Outgoing:
    """Run `app` on one request and collect its response. `send_wrapper(send)`, when given,
    is what the app gets as `send` (the Knative CloudEvents sender). A response that grows
    past `limit` bytes (0: none) stops the app with ResponseTooLarge at that chunk."""
    status = size = 0
    response_headers: Any = ()
    chunks: list[bytes] = []
    complete = False
    received = False
    waiter: asyncio.Future[None] | None = None

    async def receive() -> Message:
        nonlocal received, waiter
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        if not complete:  # a server says "disconnect" once the response is out
            waiter = asyncio.get_running_loop().create_future()
            await waiter
        return dict(_DISCONNECT)

    async def send(message: Message) -> None:
        nonlocal status, response_headers, complete, size
        kind = message["type"]
        if kind == "http.response.body":
            if not status:
                raise RuntimeError('the app sent "http.response.body" before "http.response.start"')
            if complete:
                raise RuntimeError("the app sent more body after the response was complete")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if 0 < limit < size:
                    raise ResponseTooLarge(size, limit)
                chunks.append(bytes(chunk))
            if not message.get("more_body", False):
                complete = True
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif kind == "http.response.start":
            if status:
                raise RuntimeError('the app sent "http.response.start" twice')
            value = int(message["status"])
            if not 200 <= value <= 599:
                raise ValueError(f"the app answered status {value}; a response must be 200-599")
            status, response_headers = value, message.get("headers", ())
        elif kind != "http.response.trailers":
            raise RuntimeError(
                f"the app sent a {kind!r} message, which an HTTP request cannot take "
                "(expected http.response.start or http.response.body)"
            )

    try:
        await app(scope, receive, send if send_wrapper is None else send_wrapper(send))
    except Exception:
        if not complete:
            raise
        # The response was complete: a server would have sent it and logged this.
        traceback.print_exc()
    if 0 < limit < size:  # (an app that swallowed the error still gets no response out)
        raise ResponseTooLarge(size, limit)
    if not status:
        raise NoResponse(
            "the ASGI app returned without sending a response (no http.response.start "
            "message); every request needs one, such as a 404 for a path the app does not serve"
        )
    headers = [[_text(k), _text(v)] for k, v in response_headers]
    return status, headers, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


# ---- the lifespan ---------------------------------------------------------------------------


class Lifespan:
    """The app's lifespan scope, run in a task of its own for the life of the instance. An app
    that raises on it, or returns without answering, does not support it (per the spec)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = True
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[str | None] | None = None
        self._stopped: asyncio.Future[str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._started, self._stopped = loop.create_future(), loop.create_future()
        scope: Scope = {"type": "lifespan", "asgi": dict(_ASGI, spec_version="2.0")}
        scope["state"] = self.state
        # Output of the app's background work goes to the instance's own output, not to the
        # logs of the deploy that happened to start it.
        context = contextvars.copy_context()
        context.run(current_capture.set, None)
        self._task = asyncio.create_task(self._run(scope), name="asgi lifespan", context=context)
        self._inbox.put_nowait({"type": "lifespan.startup"})
        pending: list[asyncio.Future[Any]] = [self._started, self._task]
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if self._started.done():
            failure = self._started.result()
            if failure is None:
                return
            if not self._task.done():
                await asyncio.wait([self._task], timeout=1.0)
            if self._error is not None:
                raise self._error
            raise LifespanStartupFailed(f"the app's lifespan startup failed: {failure}")
        self.supported = False  # it returned or raised without answering startup

    async def shutdown(self) -> None:
        if not self.supported or self._task is None or self._task.done():
            return
        assert self._stopped is not None
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        pending: list[asyncio.Future[Any]] = [self._stopped, self._task]
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        failure = self._stopped.result() if self._stopped.done() else None
        if failure:
            print(f"the app's lifespan shutdown failed: {failure}", file=sys.stderr)

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            self._error = exc
            started = self._started
            if started is not None and started.done() and started.result() is None:
                traceback.print_exc()  # after a good startup: say so; the instance goes on

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        started, stopped = self._started, self._stopped
        assert started is not None
        assert stopped is not None
        if kind == "lifespan.startup.complete" and not started.done():
            started.set_result(None)
        elif kind == "lifespan.startup.failed" and not started.done():
            started.set_result(str(message.get("message", "")) or "(no message)")
        elif kind == "lifespan.shutdown.complete" and not stopped.done():
            stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed" and not stopped.done():
            stopped.set_result(str(message.get("message", "")) or "(no message)")


# ---- binding --------------------------------------------------------------------------------


def as_asgi3(target: Any) -> App | None:
    """`target` as an ASGI 3 callable, or None when it is not an app (ASGI 2 apps, classes
    instantiated per scope, are wrapped)."""
    if is_asgi(target):
        return target  # type: ignore[no-any-return]
    if not callable(target) or is_wsgi(target):
        return None
    arity = positional_arity(target)
    if arity is None:
        return None
    required, most = arity
    if inspect.isclass(target):
        if required == 1 and inspect.iscoroutinefunction(_instance_call(target)):
            return _asgi2(target)
        return None
    if required <= 3 and (most == 3 or most == -1) and required >= 1:
        return _awaiting(target)  # a sync __call__ that returns an awaitable
    if required == 1 and most == 1 and not inspect.iscoroutinefunction(target):
        return _asgi2(target)
    return None


def _instance_call(kind: type) -> Any:
    return next((k.__dict__["__call__"] for k in kind.__mro__ if "__call__" in k.__dict__), None)


def _asgi2(factory: Callable[[Scope], Any]) -> App:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await factory(scope)(receive, send)

    return app


def _awaiting(target: Callable[..., Any]) -> App:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        result = target(scope, receive, send)
        if inspect.isawaitable(result):
            await result

    return app


def resolve_app(target: Any, info: BindInfo) -> App:
    """The app `target` names: itself, or what a zero-argument factory returns."""
    app = as_asgi3(target)
    if app is not None:
        return app
    arity = positional_arity(target) if callable(target) else None
    if arity is not None and arity[0] == 0 and not inspect.iscoroutinefunction(target):
        made = target()
        app = as_asgi3(made)
        if app is not None:
            return app
        raise StyleMismatch(
            f'"{info.entry}" was called as an app factory (it takes no arguments) and returned '
            f"a {type(made).__name__}, not an ASGI app; name the app itself with "
            "--asgi MODULE:APP, or a factory that returns one"
        )
    found = describe(target, info.entry)
    if is_wsgi(target):
        found += " (a WSGI app: deploy it with --wsgi)"
    raise mismatch(info.style, found, SIGNATURE)


def path_includes_root(app: Any, own_dir: str) -> bool:
    """Whether the app's framework expects scope["path"] to include root_path (the ASGI
    spec's reading, which uvicorn --root-path follows): Starlette >= 0.35 (FastAPI), Quart,
    Django, Litestar. Library middleware that keeps the app it wraps in `.app` is looked
    through; the function's own middleware is not (it was written against root paths)."""
    for _ in range(16):
        if app is None:
            return False
        owner = app if inspect.isroutine(app) else type(app)
        for kind in getattr(owner, "__mro__", (owner,)):
            top = (getattr(kind, "__module__", "") or "").partition(".")[0]
            if top in _SPEC_PATH_FRAMEWORKS:
                if top in ("starlette", "fastapi"):
                    utils = sys.modules.get("starlette._utils")
                    return hasattr(utils, "get_route_path")  # 0.35: routes strip root_path
                return True
        module = sys.modules.get(getattr(owner, "__module__", "") or "")
        if str(getattr(module, "__file__", None) or "").startswith(own_dir):
            return False
        app = getattr(app, "app", None)
    return False


def code_dir(module: Any) -> str:
    """The directory the function's code was unpacked in (the main module may be in a
    package: hello_world/app.py)."""
    path = Path(getattr(module, "__file__", None) or ".").resolve()
    depth = len(str(getattr(module, "__name__", "x")).split("."))
    return str(path.parents[depth - 1]) + os.sep


def bind(target: Any, info: BindInfo) -> Bound:
    app = resolve_app(target, info)
    root_path = f"/fn/{info.function}"
    own = code_dir(info.module)
    prefix = root_path if path_includes_root(target, own) or path_includes_root(app, own) else ""
    lifespan = Lifespan(app)

    async def run(call: Incoming) -> Outgoing:
        scope, body = http_scope(call, root_path, prefix, lifespan.state)
        return await exchange(app, scope, body, limit=info.max_response_bytes)

    return Bound(run=run, is_async=True, startup=lifespan.startup, shutdown=lifespan.shutdown)
