"""Fission's Python environment: `def main()`, reading the request from Flask's `request`.

Fission serves the function as the view of a Flask app that takes every path under the
function's route; `main()` is called with no arguments inside the request, so `flask.request`
(body, JSON, form, args, headers), `flask.current_app` and its logger work as they do there.
What it returns is made a response by Flask: a string (text/html), a `(body, status)` or
`(body, status, headers)` tuple, a dict or list (JSON), a Flask Response (`redirect`,
`jsonify`, `make_response`).

Unlike Fission's, every method reaches the function (Fission's routes leave out PATCH). An
event (topic, schedule, table) reaches it as a POST of its payload with its content type.

Fission's router hands a route's URL parameters (`fission route create --url
'/items/{id:[0-9]+}'`) to the function as headers, `X-Fission-Params-Id`. Ember has no route
templates: give them with `--env FISSION_ROUTE='/items/{id:[0-9]+}'` (several separated by
spaces), matched against the path after /fn/NAME, else after /fn (a function deployed as
"items" called at /fn/items/7 matches /items/{id}), and a match sets the same headers.
"""

from __future__ import annotations

import os
import re
from typing import Any

from invoker.styles import BindInfo, Bound, Incoming, Outgoing, StyleMismatch, mismatch
from invoker.styles.flaskapp import view_app
from invoker.styles.native import describe, takes
from invoker.styles.wsgi import serve

SIGNATURE = "def main() (reading flask.request), returning a str, a tuple or a Flask response"


def bind(target: Any, info: BindInfo) -> Bound:
    if not callable(target) or not takes(target, 0):
        raise mismatch("fission", describe(target, info.entry), SIGNATURE)
    main = target

    def view(path: str) -> Any:
        return main()

    app = view_app(info.module, view)
    app.logger.setLevel("DEBUG")  # Fission's environment logs the function's debug lines too
    bound = serve(app, info.function, info.max_response_bytes)
    routes = [route_pattern(r) for r in os.environ.get("FISSION_ROUTE", "").split()]
    if not routes:
        return bound
    serve_call, prefix = bound.run, "/" + info.function

    def run(call: Incoming) -> Outgoing:
        # The template may be Fission's whole URL: /fn/items/7 is /items/7 there.
        paths = (call.path, prefix + call.path if call.path != "/" else prefix)
        params = route_params(routes, paths)
        if params:  # set, as Fission's router sets them: a caller's own are dropped
            call.headers = [
                *(h for h in call.headers if not h[0].lower().startswith("x-fission-params-")),
                *params,
            ]
        result: Outgoing = serve_call(call)
        return result

    return Bound(run=run, is_async=False)


def route_params(
    routes: list[tuple[re.Pattern[str], list[str]]], paths: tuple[str, ...]
) -> list[tuple[str, str]]:
    """The X-Fission-Params-* headers of the first route that matches one of `paths`."""
    for pattern, names in routes:
        for path in paths:
            match = pattern.fullmatch(path)
            if match is not None:
                values = match.groups()
                return [(f"X-Fission-Params-{n}", v) for n, v in zip(names, values, strict=True)]
    return []


_VARIABLE = re.compile(r"\{([^{}:]+)(?::((?:[^{}]|\{[^{}]*\})+))?\}")


def route_pattern(route: str) -> tuple[re.Pattern[str], list[str]]:
    """A Fission (gorilla/mux) URL template as a regular expression, and its variables' names:
    `/items/{id:[0-9]+}/{name}` matches /items/7/ada."""
    parts, names, end = [], [], 0
    for variable in _VARIABLE.finditer(route):
        parts.append(re.escape(route[end : variable.start()]))
        names.append(variable[1].strip())
        parts.append(f"({variable[2] or '[^/]+'})")
        end = variable.end()
    parts.append(re.escape(route[end:]))
    try:
        pattern = re.compile("".join(parts))
    except re.error as exc:
        raise StyleMismatch(
            f"FISSION_ROUTE {route!r} is not a route template like /items/{{id:[0-9]+}}: {exc}"
        ) from None
    if pattern.groups != len(names):
        raise StyleMismatch(
            f"FISSION_ROUTE {route!r}: use non-capturing groups (?:...) inside {{name:...}}"
        )
    return pattern, names
