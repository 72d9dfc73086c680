"""The routes of a SAM template's Api and HttpApi events, for the lambda style (its `routes`
option, `GET /items/{id};ANY /{proxy+}`, which `fn deploy template.yaml` sets).

A call's sub-path (after /fn/NAME) is matched as API Gateway matches a request: the most
specific route wins (literal segments over path variables over a greedy `{name+}`, a method
over ANY), and its variables become the event's `pathParameters`, its path the `resource` (v1)
and `METHOD path` the `routeKey` (v2). A function with routes answers a path none matches with
404 `{"message": "Not Found"}`, as API Gateway does; one without routes takes every path as
`/{proxy+}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VARIABLE = re.compile(r"^\{([A-Za-z0-9_.-]+)(\+?)\}$")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    """GET, POST... or ANY."""
    path: str
    """As the template writes it: /items/{id}, /{proxy+}."""
    pattern: re.Pattern[str]
    names: tuple[str, ...]
    rank: tuple[int, int, int, int]
    """Sorts the most specific route first."""

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class Matched:
    route: Route
    parameters: dict[str, str]


class RoutesError(ValueError):
    """The routes option cannot be read; the message says which route and why."""


def parse_routes(text: str) -> tuple[Route, ...]:
    """`METHOD /path;METHOD /path...`, most specific first."""
    routes = []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        method, _, path = item.partition(" ")
        path = path.strip() or "/"
        if not method.isalpha() or not path.startswith("/"):
            raise RoutesError(f"route {item!r} is not METHOD /path, like GET /items/{{id}}")
        routes.append(_route(method.upper(), path))
    return tuple(sorted(routes, key=lambda r: r.rank))


def _route(method: str, path: str) -> Route:
    segments = [s for s in path.split("/") if s]
    parts: list[str] = []
    names: list[str] = []
    literal = greedy = 0
    for i, segment in enumerate(segments):
        variable = _VARIABLE.match(segment)
        if variable is None:
            parts.append(re.escape(segment))
            literal += 1
            continue
        group = f"p{len(names)}"
        names.append(variable[1])
        if variable[2]:
            if i != len(segments) - 1:
                raise RoutesError(f"route {method} {path}: a greedy {segment} must come last")
            parts.append(f"(?P<{group}>.+)")
            greedy = 1
        else:
            parts.append(f"(?P<{group}>[^/]+)")
    pattern = re.compile("/" + "/".join(parts) + "/?" if parts else "/?")
    rank = (greedy, -literal, -len(segments), int(method == "ANY"))
    return Route(method, path, pattern, tuple(names), rank)


def match_route(routes: tuple[Route, ...], method: str, path: str) -> Matched | None:
    """The most specific route that takes `method` and `path`, with its variables' values."""
    for route in routes:
        if route.method not in ("ANY", method.upper()):
            continue
        found = route.pattern.fullmatch(path or "/")
        if found is not None:
            return Matched(route, {name: found[f"p{i}"] for i, name in enumerate(route.names)})
    return None
