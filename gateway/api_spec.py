"""The API's description, from the types the handlers use: each route handler carries an
`Operation` (its summary and the `TypedDict`s of its body, query and answers), declared beside
the route with `@operation(...)`, and `document(app)` walks the application's real routes into
an OpenAPI 3.1 document. A route without an operation is an error of the document's test, so
the description cannot fall behind the routes.

TypedDict -> JSON Schema: `str`, `int`, `float`, `bool`, `None`, unions, `Literal`, `list`,
`dict[str, X]`, nested TypedDicts (as components), `Any`; `Annotated[T, ("minimum", 1)]` adds a
keyword; `NotRequired` keys are optional. Response objects allow more properties
than they name (a field added later is not a break); request objects name what is read.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """What one route takes and answers; `responses` maps a status to a TypedDict (JSON),
    `None` (any body), a media type string (`"text/plain"`) or a list of those (one status,
    several media types); every other status is the error shape."""

    summary: str
    tag: str
    body: Any = None
    query: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    responses: Mapping[int, Any] = field(default_factory=dict)
    public: bool = False
    body_required: bool = True


OPERATIONS: dict[Handler, Operation] = {}


def operation(
    tag: str,
    summary: str,
    *,
    body: Any = None,
    query: Any = None,
    headers: Mapping[str, str] | None = None,
    responses: Mapping[int, Any],
    public: bool = False,
    body_required: bool = True,
) -> Callable[[H], H]:
    """Describe the handler below for the OpenAPI document (the handler is unchanged)."""

    def describe(handler: H) -> H:
        OPERATIONS[handler] = Operation(
            summary=summary,
            tag=tag,
            body=body,
            query=query,
            headers=dict(headers or {}),
            responses=dict(responses),
            public=public,
            body_required=body_required,
        )
        return handler

    return describe


class Schemas:
    """JSON Schemas of Python types, collecting the TypedDicts met as named components."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def of(self, tp: Any, *, request: bool = False) -> dict[str, Any]:
        origin, args = get_origin(tp), get_args(tp)
        if origin is typing.Annotated:
            extra: dict[str, Any] = {}
            for meta in args[1:]:
                if isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[0], str):
                    extra[meta[0]] = meta[1]
            return {**self.of(args[0], request=request), **extra}
        if origin in (typing.NotRequired, typing.Required):
            return self.of(args[0], request=request)
        if tp is Any or tp is object:
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
        if tp in simple:
            return {"type": simple[tp]}
        if origin in (Union, types.UnionType):
            return {"anyOf": [self.of(a, request=request) for a in args]}
        if origin is Literal:
            return {"enum": list(args)}
        if origin in (list, Sequence, tuple):
            return {"type": "array", "items": self.of(args[0], request=request) if args else {}}
        if origin in (dict, Mapping):
            values = self.of(args[1], request=request) if args else {}
            return {"type": "object", "additionalProperties": values}
        if typing.is_typeddict(tp):
            return self._typeddict(tp, request=request)
        raise TypeError(f"no JSON Schema for {tp!r}")

    def _typeddict(self, tp: Any, *, request: bool) -> dict[str, Any]:
        name = tp.__name__
        if name not in self.components:
            self.components[name] = {}  # (a placeholder: a type may name itself)
            hints = get_type_hints(tp, include_extras=True)
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {k: self.of(v, request=request) for k, v in hints.items()},
                # (a NotRequired left in the hints: annotations read as strings, which the
                # TypedDict's own __required_keys__ did not see)
                "required": sorted(
                    k
                    for k, v in hints.items()
                    if k in tp.__required_keys__ and get_origin(v) is not typing.NotRequired
                ),
                "additionalProperties": not request,
            }
            if tp.__doc__:
                schema["description"] = " ".join(tp.__doc__.split())
            self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}


ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _routes(app: web.Application) -> list[tuple[str, str, Handler]]:
    """(method, path, handler) of every route of `app` and its sub-applications (whose
    resources carry their prefix)."""
    out: list[tuple[str, str, Handler]] = []
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            out += _routes(resource._app)
            continue
        for route in resource:
            if route.method == "HEAD":
                continue
            methods = METHODS if route.method == "*" else (route.method.lower(),)
            out += [(m, resource.canonical, route.handler) for m in methods]
    return out


NAMESPACE_HEADER = {
    "name": "X-Ember-Namespace",
    "in": "header",
    "required": False,
    "description": "The namespace the request works in (default: the key's own, or `default` "
    "for the admin token); a key of another namespace is refused (403).",
    "schema": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,39}$"},
}
"""On every admin route: functions, topics, triggers, secrets are per namespace (auth.py)."""

NOT_API = ("/ui",)
"""Paths of pages for people (the dashboard), not of the API."""


def undescribed(app: web.Application) -> list[str]:
    """The API's routes that have no operation (the document's test wants none)."""
    return [
        f"{m.upper()} {p}"
        for m, p, h in _routes(app)
        if h not in OPERATIONS and not p.startswith(NOT_API)
    ]


def document(app: web.Application, *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes `app` serves."""
    from gateway.schemas import Error

    schemas = Schemas()
    schemas.of(Error)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in _routes(app):
        op = OPERATIONS.get(handler)
        if op is None:
            continue
        paths.setdefault(path, {})[method] = _operation(schemas, method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ember",
            "version": version,
            "description": "The Ember gateway: the admin API under /v1 (the admin token or an "
            "API key), function calls under /fn/NAME (namespace default) and "
            "/fn/NAMESPACE/NAME. Every error is {error: {code, message, ...}}.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(schemas: Schemas, method: str, path: str, op: Operation) -> dict[str, Any]:
    name = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    out: dict[str, Any] = {
        "operationId": f"{method}_{name or 'root'}",
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _path_params(path)
        ],
        "responses": {},
    }
    if path.startswith("/v1/") and not op.public:
        out["security"] = [{"token": []}]
        out["parameters"].append(NAMESPACE_HEADER)
    if op.query is not None:
        hints = get_type_hints(op.query, include_extras=True)
        for key, tp in hints.items():
            out["parameters"].append(
                {
                    "name": key,
                    "in": "query",
                    "required": key in op.query.__required_keys__,
                    "schema": schemas.of(tp),
                }
            )
    for header, description in op.headers.items():
        out["parameters"].append(
            {
                "name": header,
                "in": "header",
                "required": False,
                "description": description,
                "schema": {"type": "string"},
            }
        )
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schemas.of(op.body, request=True)}},
        }
    elif path.startswith("/fn/") and method != "get":
        out["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    for status, answers in op.responses.items():
        content: dict[str, Any] = {}
        for answer in answers if isinstance(answers, list) else [answers]:
            if isinstance(answer, str):
                content[answer] = {"schema": {"type": "string"}}
            elif answer is None:
                content["*/*"] = {"schema": {}}
            else:
                content["application/json"] = {"schema": schemas.of(answer)}
        out["responses"][str(status)] = {"description": _reason(status), "content": content}
    out["responses"]["default"] = {
        "description": "an error: {error: {code, message, ...}}",
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    return out


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _reason(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase
