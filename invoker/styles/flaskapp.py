"""A Flask app around one view: how the fission and gcf styles hand a function Flask's request
and turn what it returns into a response.

Both platforms serve the user's function as the view of a Flask app whose routes take every
path ("/" and "/<path:path>"); whatever the view returns goes through Flask's own
`make_response` (a str, bytes, a dict or list as JSON, a `(body, status)` or
`(body, status, headers)` tuple, a Response). The app is served by the wsgi style's machinery.

Flask is the function's (gateway/frameworks.py adds it to the requirements of these styles),
not the platform's: only these styles import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import flask
from werkzeug.routing import Rule


def view_app(
    module: Any, view: Callable[..., Any], *, not_found: Iterable[str] = (), name: str = ""
) -> flask.Flask:
    """A Flask app named after the function's module (its templates/ folder beside it) whose
    every path and method runs `view(path)`; `not_found` paths answer 404 instead.

    Exceptions are not turned into Flask's 500 page: they propagate, so that the call fails as
    the function's error (500, traceback in the activation's log). HTTP errors (`abort(404)`)
    are answered as Flask answers them."""
    filename = getattr(module, "__file__", None)
    root = os.path.dirname(os.path.abspath(filename)) if filename else os.getcwd()
    app = flask.Flask(name or module.__name__, root_path=root, static_folder=None)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    app.url_map.add(Rule("/", defaults={"path": ""}, endpoint="run"))  # any method
    for path in not_found:
        app.url_map.add(Rule(path, endpoint="not_found"))
    app.url_map.add(Rule("/<path:path>", endpoint="run"))
    app.view_functions["run"] = view
    app.view_functions["not_found"] = _not_found
    return app


def _not_found() -> Any:
    flask.abort(404)
