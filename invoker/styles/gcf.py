"""Google Cloud Functions, as functions-framework runs them: HTTP, CloudEvent, typed and
background (legacy event) functions.

Which kind a function is, in functions-framework's order: its decorator
(`@functions_framework.http`, `.cloud_event`, `.typed`, `.aio.cloud_event`: the framework's
registry, read when the module imported functions_framework), else FUNCTION_SIGNATURE_TYPE
(`--env FUNCTION_SIGNATURE_TYPE=http|cloudevent|event`), else its parameters: two,
`(data, context)`, make a background function; one named `cloud_event` (or annotated
`CloudEvent`) a CloudEvent function; any other one, `(request)`, an HTTP function.

- HTTP: the view of a Flask app taking every path and method (but /robots.txt and
  /favicon.ico, 404 as in functions-framework), called with the Flask request; what it
  returns is made a response by Flask (str, bytes, dict or list as JSON, a tuple with the
  status and headers, a Response). An exception is the function's error (500). An Ember event
  reaches it as a POST of its payload.
- CloudEvent: `fn(cloud_event)` with a cloudevents.http.CloudEvent read from a binary-mode
  (ce-* headers) or structured-mode (application/cloudevents+json) POST; an Ember event is a
  Pub/Sub messagePublished CloudEvent (gcf_events.py). It answers 200 "OK"; a request that
  is not a CloudEvent, 400; another method than POST, 405.
- typed: `fn(InputType.from_dict(json))`, its result's `to_dict()` answered as JSON.
- background: `fn(data, context)` with context.event_id, timestamp, event_type and resource
  (gcf_events.py says how they are read); it answers 200 "OK".
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
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
from invoker.styles.gcf_events import (
    background_of_event,
    background_of_request,
    cloud_event_parts,
)
from invoker.styles.native import describe, takes
from invoker.styles.wsgi import serve

SIGNATURE = (
    "def fn(request) (HTTP: a Flask request), def fn(cloud_event) "
    "(@functions_framework.cloud_event), or def fn(data, context) (a background function)"
)
KINDS = ("http", "cloudevent", "event", "typed")
_NOT_FOUND = ("/robots.txt", "/favicon.ico")
_OK: Outgoing = (200, [["Content-Type", "text/plain; charset=utf-8"]], b"OK")
_ONLY_POST: Outgoing = (
    405,
    [["Allow", "POST"], ["Content-Type", "text/plain; charset=utf-8"]],
    b"an event function takes its events in POST requests",
)


def bind(target: Any, info: BindInfo) -> Bound:
    if not callable(target):
        raise mismatch("gcf", describe(target, info.entry), SIGNATURE)
    kind, registered = signature_type(target, info.entry)
    if not takes(target, 2 if kind == "event" else 1):
        expected = {
            "event": "def fn(data, context), a background function",
            "cloudevent": "def fn(cloud_event), a CloudEvent function",
        }.get(kind, "def fn(request), an HTTP function")
        raise mismatch("gcf", describe(target, info.entry), expected)
    if kind == "event":
        return _background(target, info)
    if kind == "cloudevent":
        return _cloud_event(target, info)
    if inspect.iscoroutinefunction(target) or registered == "aio":
        raise StyleMismatch(
            f'"{info.entry}" is an async HTTP function (functions_framework.aio: a Starlette '
            "request); the gcf style gives HTTP functions a Flask request: use "
            "@functions_framework.http and def, or serve a Starlette app with --asgi"
        )
    if kind == "typed":
        return _typed(target, info, _input_type(target, info.entry))
    return _http(target, info)


def signature_type(target: Any, entry: str) -> tuple[str, str]:
    """(kind, how it was found: "registry", "aio", "env" or "parameters")."""
    registry = sys.modules.get("functions_framework._function_registry")
    if registry is not None:
        for name in (entry.rsplit(".", 1)[-1], getattr(target, "__name__", "")):
            kind = getattr(registry, "REGISTRY_MAP", {}).get(name)
            if kind in KINDS:
                aio = name in getattr(registry, "ASGI_FUNCTIONS", ())
                return kind, "aio" if aio else "registry"
    configured = os.environ.get("FUNCTION_SIGNATURE_TYPE", "")
    if configured:
        if configured not in KINDS[:3]:
            raise StyleMismatch(
                f"FUNCTION_SIGNATURE_TYPE={configured!r} is not a kind of function the gcf "
                "style runs; set it to http, cloudevent or event (or leave it out)"
            )
        return configured, "env"
    try:
        params = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return "http", "parameters"
    required = [p for p in params if p.default is p.empty]
    if len(required) == 2:
        return "event", "parameters"
    if params and (
        params[0].name in ("cloud_event", "cloudevent")
        or str(params[0].annotation).rsplit(".", 1)[-1].strip("'>") == "CloudEvent"
    ):
        return "cloudevent", "parameters"
    return "http", "parameters"


def _input_type(target: Any, entry: str) -> Any:
    registry = sys.modules["functions_framework._function_registry"]
    types = getattr(registry, "INPUT_TYPE_MAP", {})
    for name in (entry.rsplit(".", 1)[-1], getattr(target, "__name__", "")):
        if name in types:
            return types[name]
    raise StyleMismatch(f'"{entry}" is a typed function with no input type registered')


def _project() -> str:
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCP_PROJECT") or "ember"


def _http(function: Callable[..., Any], info: BindInfo) -> Bound:
    import flask  # the function's, as on Cloud Functions (only HTTP functions need it)

    from invoker.styles.flaskapp import view_app

    request: Any = flask.request  # a proxy: the function gets the request it stands for

    def view(path: str) -> Any:
        return function(request._get_current_object())

    app = view_app(info.module, view, not_found=_NOT_FOUND, name=info.entry)
    return serve(app, info.function, info.max_response_bytes)


def _typed(function: Callable[..., Any], info: BindInfo, input_type: Any) -> Bound:
    import flask

    from invoker.styles.flaskapp import view_app

    request = flask.request

    def view(path: str) -> Any:
        result = function(input_type.from_dict(request.get_json()))
        if result is None:
            return "", 200
        if type(result).__module__ == "builtins":
            return result
        if not callable(getattr(result, "to_dict", None)):
            raise TypeError(
                f"the typed function returned a {type(result).__name__}, which has no to_dict()"
            )
        return flask.jsonify(result.to_dict())

    app = view_app(info.module, view, not_found=_NOT_FOUND, name=info.entry)
    return serve(app, info.function, info.max_response_bytes)


def _cloud_event(function: Callable[..., Any], info: BindInfo) -> Bound:
    # The function's, not the platform's: gateway/frameworks.py adds it when the code imports
    # functions_framework or cloudevents, and a deploy missing it adds it after its check.
    try:
        from cloudevents.exceptions import GenericException
        from cloudevents.http import CloudEvent, from_http
    except ImportError:  # cloudevents 2 keeps the 1.x API (functions-framework's) under v1
        from cloudevents.v1.exceptions import GenericException
        from cloudevents.v1.http import CloudEvent, from_http

    project, name = _project(), info.function

    def event_of(call: Incoming) -> Any:
        if call.is_event:
            return CloudEvent(*cloud_event_parts(call, project, name))
        headers = dict(call.headers)
        headers["content-type"] = call.content_type
        try:
            return from_http(headers, call.body)
        except GenericException as exc:
            raise BadRequest(
                f"the request is not a CloudEvent ({exc}); send one in binary mode (ce-id, "
                "ce-source, ce-type and ce-specversion headers) or structured mode "
                "(Content-Type: application/cloudevents+json), or publish to a topic the "
                "function is subscribed to"
            ) from None

    if inspect.iscoroutinefunction(function):

        async def run_async(call: Incoming) -> Outgoing:
            if not call.is_event and call.method != "POST":
                return _ONLY_POST
            await function(event_of(call))
            return _OK

        return Bound(run=run_async, is_async=True)

    def run(call: Incoming) -> Outgoing:
        if not call.is_event and call.method != "POST":
            return _ONLY_POST
        function(event_of(call))
        return _OK

    return Bound(run=run, is_async=False)


def _background(function: Callable[..., Any], info: BindInfo) -> Bound:
    project = _project()

    def run(call: Incoming) -> Outgoing:
        if call.is_event:
            data, context = background_of_event(call, project)
        elif call.method != "POST":
            return _ONLY_POST
        else:
            data, context = background_of_request(call)
        function(data, context)
        return _OK

    return Bound(run=run, is_async=False)
