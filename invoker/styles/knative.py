"""Knative Functions (`func create -l python`) run unchanged: the func-python middleware's
contract, and the older parliament one.

func-python (the current http and cloudevents templates): the module defines `new()`, called
once at bind, returning an object with `async def handle(self, scope, receive, send)` and
optionally `start(cfg)` (called before the first call with the environment as a dict, as
func-python passes `os.environ.copy()`), `stop()` (when the instance stops), `alive()` and
`ready()` (answering GET /health/liveness and /health/readiness, as func-python routes them:
True, False or (bool, message)). A module-level `async def handle(scope, receive, send)` is served
the same way. `handle` is an ASGI app (see invoker.styles.asgi): path is the sub-path,
root_path "/fn/NAME".

The cloudevents template (func.yaml says `invoke: cloudevent`; without a func.yaml, a module that
imports `cloudevents`) gets each request decoded as a CloudEvent (binary or structured mode) into
`scope["event"]`, and a `send` that takes a CloudEvent: `await send(event)` answers it in
structured mode, `send.binary(event)` in binary mode, `send.http(message)` a raw ASGI message.
A request that is not a CloudEvent is a 400. The CloudEvents SDK the code imports is used:
`cloudevents.core` (cloudevents 2, func-python >= 0.7) or `cloudevents.http` (cloudevents 1).

parliament (the older templates): `def main(context)`, where `context.request` (or
`context["request"]`) is a Flask request and `context.cloud_event` the CloudEvent of a POST that
carries one; the result is what Flask takes (str, bytes, dict, (body, status[, headers]), a
Response) or a CloudEvent, answered in binary mode.

Events (topic, schedule, table) arrive as Knative Eventing delivers them: a binary-mode
CloudEvent POSTed to "/", the payload as its data with its content type, ce-specversion 1.0,
ce-id the delivery id (stable across retries), ce-time when it was submitted, ce-source
"/ember/topics/TOPIC" (a topic) or "/ember/functions/NAME/schedule|table", ce-type
dev.ember.topic.published, dev.ember.schedule.fired or dev.ember.table.changed.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoker.styles import (
    BadRequest,
    BindInfo,
    Bound,
    Incoming,
    Outgoing,
    StyleMismatch,
    mismatch,
)
from invoker.styles import asgi as _asgi
from invoker.styles.detect import is_asgi
from invoker.styles.native import describe, positional_arity

SIGNATURE = (
    "def new() returning an object with async def handle(self, scope, receive, send) "
    "(func-python), async def handle(scope, receive, send), or def main(context) (parliament)"
)
HEALTH = {"/health/liveness": "alive", "/health/readiness": "ready"}
_TEXT = [["content-type", "text/plain"]]
_CE_TYPES = {
    "topic": "dev.ember.topic.published",
    "schedule": "dev.ember.schedule.fired",
    "table": "dev.ember.table.changed",
}
_INVOKE = re.compile(r"""^invoke:\s*["']?([A-Za-z]+)""")


def bind(target: Any, info: BindInfo) -> Bound:
    arity = positional_arity(target) if callable(target) else None
    if arity is not None and arity[0] == 0 and not is_asgi(target):
        instance = target()  # new()
        return _bind_instance(instance, info, f"{info.entry}()")
    if arity is not None and arity[0] == 1 and arity[1] in (1, -1) and not is_asgi(target):
        return _bind_parliament(target, info)
    if _asgi.as_asgi3(target) is not None and not inspect.isclass(target):
        return _bind_instance(_Static(target), info, info.entry)
    raise mismatch(info.style, describe(target, info.entry), SIGNATURE)


class _Static:
    """func-python's DefaultFunction: a module-level handle with default health checks."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle


# ---- func-python: new() and handle ----------------------------------------------------------


def _bind_instance(instance: Any, info: BindInfo, made_by: str) -> Bound:
    handle = getattr(instance, "handle", None)
    app = _asgi.as_asgi3(handle) if callable(handle) else None
    if app is None:
        found = "no handle method" if handle is None else describe(handle, "handle")
        raise StyleMismatch(
            f"{made_by} returned a {type(instance).__name__} with {found}; a Knative function's "
            "instance defines async def handle(self, scope, receive, send) (--style knative)"
        )
    events = _load_cloudevents() if invoke_mode(info) == "cloudevent" else None
    root_path = f"/fn/{info.function}"
    function = info.function

    async def startup() -> None:
        start = getattr(instance, "start", None)
        if callable(start):
            await _maybe_await(start(dict(os.environ)))

    async def shutdown() -> None:
        stop = getattr(instance, "stop", None)
        if callable(stop):
            await _maybe_await(stop())

    async def run(call: Incoming) -> Outgoing:
        if call.path in HEALTH and not call.is_event:
            return probe(instance, HEALTH[call.path])
        scope, body = _asgi.http_scope(call, root_path, "", None)
        if call.is_event:
            scope["headers"].extend(event_headers(call, function))
        if events is None:
            return await _asgi.exchange(app, scope, body, limit=info.max_response_bytes)
        scope["event"] = events.read(scope["headers"], body)
        return await _asgi.exchange(app, scope, body, events.sender, limit=info.max_response_bytes)

    return Bound(run=run, is_async=True, startup=startup, shutdown=shutdown)


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


def probe(instance: Any, name: str) -> Outgoing:
    """func-python's health endpoints: the instance's alive()/ready(), else OK."""
    check = getattr(instance, name, None)
    healthy, message = True, "OK"
    if callable(check):
        result = check()
        healthy, message = result if isinstance(result, tuple) else (result, "OK")
    return (200 if healthy else 500), _TEXT, str(message).encode()


def invoke_mode(info: BindInfo) -> str:
    """ "cloudevent" or "http": the function's func.yaml `invoke:` (absent: http); without a
    func.yaml, cloudevent when its code imports the CloudEvents SDK."""
    chosen = info.options.get("invoke", "")
    if chosen:
        return "cloudevent" if chosen.startswith("cloudevent") else "http"
    top = _asgi.code_dir(info.module)
    directory = Path(getattr(info.module, "__file__", None) or top).resolve().parent
    while True:
        spec = directory / "func.yaml"
        if spec.is_file():
            for line in spec.read_text(errors="replace").splitlines():
                match = _INVOKE.match(line)
                if match:
                    return "cloudevent" if match[1].lower().startswith("cloudevent") else "http"
            return "http"
        if str(directory) + os.sep == top or directory == directory.parent:
            break
        directory = directory.parent
    return "cloudevent" if "cloudevents" in sys.modules else "http"


def event_headers(call: Incoming, function: str) -> list[tuple[bytes, bytes]]:
    """A binary-mode CloudEvent's attributes for an Ember event (its data is the body)."""
    if call.topic:
        source = f"/ember/topics/{call.topic}"
    else:
        source = f"/ember/functions/{function}/{call.source}"
    headers = [
        (b"ce-specversion", b"1.0"),
        (b"ce-id", (call.event_id or call.context.activation_id).encode()),
        (b"ce-source", source.encode()),
        (b"ce-type", _CE_TYPES.get(call.source, f"dev.ember.{call.source}").encode()),
    ]
    if call.event_time:
        time = call.event_time
        if time.endswith("+00:00"):
            time = time[:-6] + "Z"
        headers.append((b"ce-time", time.encode()))
    return headers


# ---- CloudEvents: the SDK the function uses -------------------------------------------------


@dataclass(slots=True, frozen=True)
class CloudEvents:
    """The CloudEvents SDK calls the middleware needs, for either major version."""

    decode: Callable[[dict[str, str], bytes], Any]
    structured: Callable[[Any], tuple[Mapping[str, str], bytes]]
    binary: Callable[[Any], tuple[Mapping[str, str], bytes]]

    def read(self, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        try:
            return self.decode(fields, body)
        except Exception as exc:
            raise BadRequest(
                "this Knative function takes CloudEvents (func.yaml: invoke: cloudevent): send "
                "ce-specversion, ce-id, ce-source and ce-type headers (binary mode) or an "
                f"application/cloudevents+json body (structured mode); {exc}"
            ) from None

    def sender(self, send: _asgi.Send) -> CloudEventSender:
        return CloudEventSender(send, self)


class CloudEventSender:
    """func-python's `send` for CloudEvent functions."""

    __slots__ = ("_events", "_send")

    def __init__(self, send: _asgi.Send, events: CloudEvents) -> None:
        self._send, self._events = send, events

    async def __call__(self, event: Any, status: int = 200) -> None:
        if isinstance(event, dict) and str(event.get("type", "")).startswith("http."):
            await self._send(event)  # (plain ASGI messages pass through)
        else:
            await self.structured(event, status)

    async def structured(self, event: Any, status: int = 200) -> None:
        await self._respond(*self._events.structured(event), status)

    async def binary(self, event: Any, status: int = 200) -> None:
        await self._respond(*self._events.binary(event), status)

    async def http(self, message: _asgi.Message) -> None:
        await self._send(message)

    async def _respond(self, headers: Mapping[str, str], body: bytes, status: int) -> None:
        fields = [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": fields})
        await self._send({"type": "http.response.body", "body": body})


def _load_cloudevents() -> CloudEvents:
    """The SDK generation the function's code imported (else what is installed)."""
    loaded = sys.modules
    if any(name.startswith("cloudevents.core") for name in loaded):
        return _cloudevents_2()
    if "cloudevents.http" in loaded or "cloudevents.v1.http" in loaded:
        return _cloudevents_1(
            "cloudevents.v1" if "cloudevents.v1.http" in loaded else "cloudevents"
        )
    try:
        return _cloudevents_2()
    except ImportError:
        return _cloudevents_1("cloudevents")


def _cloudevents_2() -> CloudEvents:
    http = importlib.import_module("cloudevents.core.bindings.http")

    def pair(message: Any) -> tuple[Mapping[str, str], bytes]:
        return message.headers, message.body

    return CloudEvents(
        decode=lambda headers, body: http.from_http_event(http.HTTPMessage(headers, body)),
        structured=lambda event: pair(http.to_structured_event(event)),
        binary=lambda event: pair(http.to_binary_event(event)),
    )


def _cloudevents_1(package: str) -> CloudEvents:
    http = importlib.import_module(f"{package}.http")
    try:
        conversion = importlib.import_module(f"{package}.conversion")
    except ImportError:  # before 1.6 they were in cloudevents.http
        conversion = http
    return CloudEvents(
        decode=http.from_http, structured=conversion.to_structured, binary=conversion.to_binary
    )


def _legacy_cloudevents() -> tuple[Any, CloudEvents] | None:
    """parliament's CloudEvents (the 1.x API: `cloudevents.http`), when installed."""
    for package in ("cloudevents", "cloudevents.v1"):
        try:
            events = _cloudevents_1(package)
            return importlib.import_module(f"{package}.http").CloudEvent, events
        except ImportError:
            continue
    return None


# ---- parliament: main(context) --------------------------------------------------------------


class ParliamentContext(Mapping[str, Any]):
    """parliament's Context: `.request` and `.cloud_event`, also readable as a mapping."""

    __slots__ = ("cloud_event", "request")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.cloud_event: Any = None

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in ("request", "cloud_event") else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([k for k in ("request", "cloud_event") if getattr(self, k) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _bind_parliament(main: Callable[[Any], Any], info: BindInfo) -> Bound:
    flask = importlib.import_module("flask")  # missing: the deploy adds it and retries
    try:
        context_class: Any = importlib.import_module("parliament").Context
    except ImportError:
        context_class = ParliamentContext
    app = flask.Flask("ember_knative")
    legacy = _legacy_cloudevents()
    root_path = f"/fn/{info.function}"
    function = info.function

    def run(call: Incoming) -> Outgoing:
        if call.path in HEALTH and not call.is_event:
            return 200, _TEXT, b"OK"
        scope, body = _asgi.http_scope(call, root_path, "", None)
        if call.is_event:
            scope["headers"].extend(event_headers(call, function))
        with app.request_context(wsgi_environ(scope, body)) as ctx:
            request = ctx.request
            context = context_class(request)
            if legacy is not None and request.method == "POST":
                with contextlib.suppress(Exception):  # (not every POST is a CloudEvent)
                    context.cloud_event = legacy[1].decode(dict(request.headers), body)
            result = main(context)
            if legacy is not None and isinstance(result, legacy[0]):
                headers, data = legacy[1].binary(result)
                result = (data, dict(headers))
            response = app.make_response(result)
            out: bytes = response.get_data()
            return response.status_code, [[k, v] for k, v in response.headers.items()], out

    return Bound(run=run, is_async=False)


def wsgi_environ(scope: _asgi.Scope, body: bytes) -> dict[str, Any]:
    """A WSGI environ (PEP 3333) for an HTTP scope."""
    server = scope["server"] or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope["root_path"].encode().decode("latin-1"),
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": scope["client"][0],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope["scheme"],
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ
