"""Fission's Python environment: `def main()`, reading the request from Flask's `request`.

Fission serves the function as the view of a Flask app that takes every path under the
function's route; `main()` is called with no arguments inside the request, so `flask.request`
(body, JSON, form, args, headers), `flask.current_app` and its logger work as they do there.
What it returns is made a response by Flask: a string (text/html), a `(body, status)` or
`(body, status, headers)` tuple, a dict or list (JSON), a Flask Response (`redirect`,
`jsonify`, `make_response`).

Unlike Fission's, every method reaches the function (Fission's routes leave out PATCH). An
event (topic, schedule, table) reaches it as a POST of its payload with its content type.
"""

from __future__ import annotations

from typing import Any

from invoker.styles import BindInfo, Bound, mismatch
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
    return serve(app, info.function)
