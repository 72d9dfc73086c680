"""Flask's ways without Flask: the request's headers and query parameters as Flask's request
gives them (werkzeug's Headers and MultiDict), and the response Flask makes of what a view
returns (`make_response`, `jsonify`), for styles whose platforms run functions under Flask
without the function seeing it (OpenFaaS's templates); and Flask's own request context around
a call when the function's code imports Flask itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import email.utils
import io
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import orjson

from invoker.styles import BadRequest, Incoming, Outgoing

HTML = "text/html; charset=utf-8"
_JSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


class MissingKey(KeyError, BadRequest):
    """A key that is not in event.query or event.headers: as in Flask (werkzeug's
    BadRequestKeyError), an uncaught one answers 400."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(key)
        self.where = where

    def __str__(self) -> str:
        return f"the request has no {self.where} {self.args[0]!r}"


class Headers:
    """The request's headers, like Flask's request.headers: case-insensitive get / [] /
    getlist / in, and iteration over (name, value) pairs."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        merged: dict[str, list[str]] = {}
        for name, value in items:
            title = name.title()
            if title in merged:
                merged[title][1] += ", " + value
            else:
                merged[title] = [title, value]
        self._items: list[tuple[str, str]] = [(k, v) for k, v in merged.values()]

    def _find(self, key: str) -> str | None:
        lowered = key.lower()
        for name, value in self._items:
            if name.lower() == lowered:
                return value
        return None

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        value = self._find(key)
        if value is None:
            return default
        if type is None:
            return value
        try:
            return type(value)
        except ValueError:
            return default

    def getlist(self, key: str, type: Callable[[str], Any] | None = None) -> list[Any]:
        value = self._find(key)
        if value is None:
            return []
        return [value if type is None else type(value)]

    get_all = getlist

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self._items[key]
        value = self._find(key)
        if value is None:
            raise MissingKey(key, "header")
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def values(self) -> list[str]:
        return [value for _, value in self._items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def to_wsgi_list(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Query(dict[str, Any]):
    """The query parameters, like Flask's request.args (a MultiDict): [key] and .get give
    the first value, .getlist all of them, .to_dict() a plain dict."""

    def __init__(self, query: str) -> None:
        super().__init__()
        for key, value in parse_qsl(query, keep_blank_values=True):
            dict.setdefault(self, key, []).append(value)

    def __getitem__(self, key: str) -> str:
        try:
            return str(dict.__getitem__(self, key)[0])
        except KeyError:
            raise MissingKey(key, "query parameter") from None

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        try:
            value = dict.__getitem__(self, key)[0]
        except KeyError:
            return default
        if type is None:
            return value
        try:
            return type(value)
        except ValueError:
            return default

    def getlist(self, key: str, type: Callable[[str], Any] | None = None) -> list[Any]:
        values = dict.get(self, key, [])
        return list(values) if type is None else [type(v) for v in values]

    def items(self, multi: bool = False) -> Iterator[tuple[str, str]]:  # type: ignore[override]
        for key, values in dict.items(self):
            if multi:
                yield from ((key, v) for v in values)
            else:
                yield key, values[0]

    def values(self) -> Iterator[str]:  # type: ignore[override]
        return (values[0] for values in dict.values(self))

    def lists(self) -> Iterator[tuple[str, list[str]]]:
        return ((k, list(v)) for k, v in dict.items(self))

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        if flat:
            return dict(self.items())
        return {k: list(v) for k, v in dict.items(self)}


def flask_response(result: Any) -> Outgoing:
    """The response Flask makes from a view's return value (flask.Flask.make_response)."""
    status: Any = None
    headers: Any = None
    if isinstance(result, tuple):
        if len(result) == 3:
            result, status, headers = result
        elif len(result) == 2:
            if isinstance(result[1], dict | list | tuple | Headers):
                result, headers = result
            else:
                result, status = result
        else:
            raise TypeError(
                "The view function did not return a valid response tuple. The tuple must have "
                f"the form (body, status, headers), (body, status), or (body, headers); it has "
                f"{len(result)} items"
            )
    if result is None:
        raise TypeError(
            "the handler returned None (in a tuple); return a str, bytes, dict, list or tuple"
        )
    out_status = 200
    if hasattr(result, "get_data") and hasattr(result, "status_code"):
        out_status = int(result.status_code)
        out_headers = _pairs(getattr(result, "headers", []))
        body = result.get_data()
    elif isinstance(result, str):
        body, out_headers = result.encode(), [["Content-Type", HTML]]
    elif isinstance(result, bytes | bytearray | memoryview):
        body, out_headers = bytes(result), [["Content-Type", HTML]]
    elif isinstance(result, dict | list):
        body, out_headers = jsonify(result), [["Content-Type", "application/json"]]
    elif isinstance(result, Iterable) and not isinstance(result, int | float):
        body = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in result)
        out_headers = [["Content-Type", HTML]]
    else:
        raise TypeError(
            f"the handler returned a {type(result).__name__} ({result!r:.80}); OpenFaaS's "
            "templates take a str, bytes, dict, list or (body, status, headers) tuple"
        )
    if status is not None:
        out_status = _status(status)
    if headers:
        given = _pairs(headers)
        names = {name.lower() for name, _ in given}
        out_headers = [h for h in out_headers if h[0].lower() not in names] + given
    return out_status, out_headers, body


def _pairs(headers: Any) -> list[list[str]]:
    if hasattr(headers, "to_wsgi_list"):
        headers = headers.to_wsgi_list()
    elif isinstance(headers, dict):
        headers = headers.items()
    return [[str(name), str(value)] for name, value in headers]


def _status(value: Any) -> int:
    code = value
    if isinstance(value, str):
        head = value.strip().split(" ", 1)[0]
        code = int(head) if head.isdigit() else None
    if isinstance(code, int) and not isinstance(code, bool) and 200 <= code <= 599:
        return code
    raise TypeError(f"the handler returned the status {value!r}; give an HTTP status, 200-599")


def jsonify(value: Any) -> bytes:
    """JSON as Flask's jsonify writes it: sorted keys, compact, a newline at the end."""
    try:
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
    except TypeError as exc:
        raise TypeError(
            f"the handler returned a value that is not JSON-serializable: {exc}"
        ) from None


def _json_default(value: Any) -> Any:
    """What Flask's JSON provider does with values JSON has no type for."""
    if isinstance(value, dt.date):
        if not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time(), dt.UTC)
        elif value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return email.utils.format_datetime(value.astimezone(dt.UTC), usegmt=True)
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "__html__"):
        return str(value.__html__())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class FlaskRequests:
    """Flask's request context around each call, for a function whose own code imports Flask
    (a python3-flask handler may use `flask.request` or `jsonify`, which need one): Flask is
    the function's, so it is used only when its module already loaded it."""

    def __init__(self, flask: Any, name: str) -> None:
        self.app = app = flask.Flask(name)
        # The templates' routes: every path matches (request.view_args, and no NotFound raised
        # and kept on each request).
        app.url_map.add(app.url_rule_class("/", defaults={"path": ""}, endpoint="handle"))
        app.url_map.add(app.url_rule_class("/<path:path>", endpoint="handle"))

    @staticmethod
    def loaded() -> Any:
        """The flask module when the function's code imported it, else None."""
        return sys.modules.get("flask")

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function(*args)` run as `wrapped(call, *args)` inside the call's request context;
        an HTTPException it raises (abort(404)) is its response, as in Flask."""
        app = self.app

        def wrapped(call: Incoming, *args: Any) -> Any:
            with app.request_context(wsgi_environ(call)):
                try:
                    return function(*args)
                except Exception as exc:
                    if _is_http_exception(exc):
                        return exc.get_response()  # type: ignore[attr-defined]
                    raise

        return wrapped

    def wrap_async(self, function: Callable[..., Any]) -> Callable[..., Any]:
        app = self.app

        async def wrapped(call: Incoming, *args: Any) -> Any:
            with app.request_context(wsgi_environ(call)):
                try:
                    return await function(*args)
                except Exception as exc:
                    if _is_http_exception(exc):
                        return exc.get_response()  # type: ignore[attr-defined]
                    raise

        return wrapped


def _is_http_exception(exc: Exception) -> bool:
    return hasattr(exc, "get_response") and isinstance(getattr(exc, "code", None), int)


def wsgi_environ(call: Incoming) -> dict[str, Any]:
    """The WSGI environ of a call (an event: a POST to / with the payload)."""
    path = "/" if call.is_event else call.path
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST" if call.is_event else call.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": "" if call.is_event else call.query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(call.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(call.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if call.content_type:
        environ["CONTENT_TYPE"] = call.content_type
    for name, value in call.headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if "HTTP_HOST" in environ:
        environ["SERVER_NAME"] = environ["HTTP_HOST"].rpartition(":")[0] or environ["HTTP_HOST"]
    return environ
