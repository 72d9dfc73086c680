"""The wsgi style in process: the PEP 3333 environ built from a call, start_response, write()
and the iterable collected, factories, and Flask (when the platform's venv has it) and Django
(likewise) served (invoker/styles/wsgi.py)."""

from __future__ import annotations

import ast
import io
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from invoker.context import Context
from invoker.styles import BindInfo, Bound, Incoming, Outgoing, StyleMismatch, bind

ROOT = Path(__file__).resolve().parents[2]
Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]


def info(entry: str = "app", style: str = "wsgi", module: Any = None) -> BindInfo:
    return BindInfo(
        style=style,
        entry=entry,
        module=module or types.ModuleType("app"),
        function="shop",
        version=1,
        memory_mb=128,
        timeout_s=30.0,
    )


def call(
    body: bytes = b"",
    *,
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "",
    source: str = "http",
) -> Incoming:
    return Incoming(
        body=body,
        method=method,
        path=path,
        query=query,
        headers=headers or [],
        content_type=content_type,
        source=source,
        context=Context(
            function="shop", version=1, activation_id="a1", deadline=time.monotonic() + 30
        ),
    )


def run(bound: Bound, incoming: Incoming) -> Outgoing:
    assert not bound.is_async
    result: Outgoing = bound.run(incoming)
    return result


def seen_environ(incoming: Incoming) -> Environ:
    """The environ a WSGI app is called with for `incoming`."""
    seen: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        seen.append(environ)
        start_response("200 OK", [])
        return []

    run(bind(app, info()), incoming)
    return seen[0]


def test_environ_follows_pep_3333() -> None:
    env = seen_environ(
        call(
            b'{"a": 1}',
            method="PUT",
            path="/items/caf\u00e9 1",
            query="q=1&name=\u00e9 x&plus=%2B",
            headers=[
                ("Host", "api.example.com:8443"),
                ("Content-Type", "application/json"),
                ("Content-Length", "999"),
                ("Transfer-Encoding", "chunked"),
                ("Accept", "text/html"),
                ("Accept", "application/json"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
                ("X-Forwarded-Proto", "https"),
                ("X_Forwarded_Proto", "http"),  # would pass for the real one: dropped
                ("X-Trace", "\u00e9t\u00e9"),
            ],
            content_type="application/json",
        )
    )
    assert env["REQUEST_METHOD"] == "PUT"
    assert env["SCRIPT_NAME"] == "/fn/shop"
    assert env["PATH_INFO"] == "/items/caf\u00e9 1".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "q=1&name=%C3%A9%20x&plus=%2B"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "8"  # the body's, not the header's
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env
    assert "HTTP_TRANSFER_ENCODING" not in env
    assert env["HTTP_ACCEPT"] == "text/html, application/json"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_HOST"] == "api.example.com:8443"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert env["HTTP_X_TRACE"] == "\u00e9t\u00e9".encode().decode("latin-1")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("api.example.com", "8443")
    assert env["wsgi.url_scheme"] == "https"
    assert env["wsgi.input"].read() == b'{"a": 1}'
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.multithread"] is True
    assert env["wsgi.run_once"] is False
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert all(isinstance(v, str) for k, v in env.items() if k.isupper())
    assert all(v.encode("latin-1") for k, v in env.items() if k.isupper())


def test_a_request_without_a_body_has_no_length_or_type() -> None:
    env = seen_environ(call(method="GET"))
    assert "CONTENT_LENGTH" not in env
    assert "CONTENT_TYPE" not in env
    env = seen_environ(call(method="POST", headers=[("Content-Length", "0")]))
    assert env["CONTENT_LENGTH"] == "0"


def test_server_name_and_port() -> None:
    def host(value: str | None, proto: str | None = None) -> tuple[str, str, str]:
        headers = [("Host", value)] if value is not None else []
        if proto is not None:
            headers.append(("X-Forwarded-Proto", proto))
        env = seen_environ(call(headers=headers))
        return env["SERVER_NAME"], env["SERVER_PORT"], env["wsgi.url_scheme"]

    assert host("example.com") == ("example.com", "80", "http")
    assert host("example.com", "https") == ("example.com", "443", "https")
    assert host("example.com", "HTTPS, http") == ("example.com", "443", "https")
    assert host("example.com", "gopher") == ("example.com", "80", "http")
    assert host("[::1]:8080") == ("::1", "8080", "http")
    assert host("[::1]") == ("::1", "80", "http")
    assert host(None) == ("localhost", "80", "http")


def test_an_event_is_a_post_of_its_payload() -> None:
    env = seen_environ(
        call(
            b'{"order": 7}',
            method="GET",
            headers=[("X-Ember-Topic", "orders")],
            content_type="application/json",
            source="topic",
        )
    )
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/"
    assert env["HTTP_X_EMBER_TOPIC"] == "orders"
    assert env["wsgi.input"].read() == b'{"order": 7}'


def test_response_headers_write_and_iterable() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"b"
            yield b""
            yield b"c"

        def close(self) -> None:
            closed.append(True)

    def app(environ: Environ, start_response: StartResponse) -> Body:
        write = start_response(
            "201 Created",
            [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
        )
        write(b"a")
        return Body()

    status, headers, body = run(bind(app, info()), call())
    assert status == 201
    assert headers == [["Content-Type", "text/plain"], ["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]
    assert body == b"abc"
    assert closed == [True]


def test_start_response_in_the_iterable_and_exc_info() -> None:
    def lazy(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("X-A", "1")])
        try:
            raise KeyError("boom")
        except KeyError:
            start_response("500 Internal Server Error", [("X-B", "2")], sys.exc_info())
        yield b"sorry"

    assert run(bind(lazy, info()), call()) == (500, [["X-B", "2"]], b"sorry")

    def twice(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return []

    with pytest.raises(AssertionError, match="twice"):
        run(bind(twice, info()), call())


def test_close_is_called_when_the_iterable_fails() -> None:
    closed: list[bool] = []

    class Failing:
        def __iter__(self) -> Iterator[bytes]:
            raise ValueError("broken body")
            yield b""

        def close(self) -> None:
            closed.append(True)

    def app(environ: Environ, start_response: StartResponse) -> Failing:
        start_response("200 OK", [])
        return Failing()

    with pytest.raises(ValueError, match="broken body"):
        run(bind(app, info()), call())
    assert closed == [True]


def test_apps_that_break_the_spec_fail_with_a_message() -> None:
    def silent(environ: Environ, start_response: StartResponse) -> list[bytes]:
        return [b"x"]

    with pytest.raises(RuntimeError, match="without calling start_response"):
        run(bind(silent, info()), call())

    def nothing(environ: Environ, start_response: StartResponse) -> None:
        start_response("200 OK", [])

    with pytest.raises(TypeError, match="returned None"):
        run(bind(nothing, info()), call())

    def text(environ: Environ, start_response: StartResponse) -> list[Any]:
        start_response("200 OK", [])
        return ["not bytes"]

    with pytest.raises(TypeError, match="held str, not bytes"):
        run(bind(text, info()), call())

    def switching(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("101 Switching Protocols", [])
        return []

    with pytest.raises(ValueError, match="200-599"):
        run(bind(switching, info()), call())

    def garbled(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("OK", [])
        return []

    with pytest.raises(ValueError, match="not '200 OK'"):
        run(bind(garbled, info()), call())


def test_an_app_object_a_class_and_a_factory() -> None:
    class App:
        def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
            start_response("200 OK", [])
            return [environ["PATH_INFO"].encode()]

    assert run(bind(App(), info()), call(path="/x"))[2] == b"/x"

    class PerRequest:  # PEP 3333's AppClass: the class is the app, an instance its iterable
        def __init__(self, environ: Environ, start_response: StartResponse) -> None:
            start_response("200 OK", [])

        def __iter__(self) -> Iterator[bytes]:
            yield b"per request"

    assert run(bind(PerRequest, info()), call())[2] == b"per request"

    made: list[str | None] = []

    def create_app(config: str | None = None) -> App:
        made.append(config)
        return App()

    bound = bind(create_app, info("create_app"))
    assert made == [None]  # called once, at bind
    assert run(bound, call(path="/y"))[2] == b"/y"
    assert made == [None]


def test_entry_points_that_are_not_apps_are_refused() -> None:
    def handler(event: Any, context: Any, extra: Any) -> None:
        pass

    with pytest.raises(StyleMismatch, match="does not fit the wsgi style"):
        bind(handler, info("handler"))

    def create_app() -> dict[str, int]:
        return {}

    with pytest.raises(StyleMismatch, match=r"create_app\(\) returned a dict, not a WSGI app"):
        bind(create_app, info("create_app"))


def test_flask_app_through_wsgi() -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask("shop")

    def item(item: int) -> Any:
        if flask.request.method == "POST":
            response = flask.jsonify(got=flask.request.get_json(), q=flask.request.args["q"])
            response.set_cookie("a", "1")
            response.set_cookie("b", "2")
            return response, 201
        return {"item": item, "url": flask.url_for("item", item=item, _external=True)}

    def boom() -> str:
        raise RuntimeError("no")

    app.add_url_rule("/items/<int:item>", view_func=item, methods=["GET", "POST"])
    app.add_url_rule("/boom", view_func=boom)

    bound = bind(app, info())
    status, headers, body = run(
        bound,
        call(
            b'{"n": 1}',
            method="POST",
            path="/items/3",
            query="q=x",
            headers=[("Host", "api.example.com")],
            content_type="application/json",
        ),
    )
    assert status == 201
    assert [v.split(";")[0] for k, v in headers if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert flask.json.loads(body) == {"got": {"n": 1}, "q": "x"}
    status, _, body = run(bound, call(path="/items/3", headers=[("Host", "api.example.com")]))
    assert flask.json.loads(body) == {"item": 3, "url": "http://api.example.com/fn/shop/items/3"}
    assert run(bound, call(path="/nowhere"))[0] == 404
    assert run(bound, call(path="/boom"))[0] == 500  # Flask's own error page


def test_django_app_through_wsgi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("django")
    (tmp_path / "tinysite.py").write_text(
        "from django.http import JsonResponse\n"
        "from django.urls import path, reverse\n"
        "SECRET_KEY = 'x'\nDEBUG = False\nALLOWED_HOSTS = ['*']\nROOT_URLCONF = 'tinysite'\n"
        "def hello(request, name):\n"
        "    return JsonResponse({'hello': name, 'url': reverse('hello', args=[name]),\n"
        "                         'q': request.GET.get('q')})\n"
        "urlpatterns = [path('hello/<name>', hello, name='hello')]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tinysite")
    django_wsgi = pytest.importorskip("django.core.wsgi")
    bound = bind(django_wsgi.get_wsgi_application(), info("application"))
    status, _, body = run(bound, call(path="/hello/ada", query="q=1"))
    assert status == 200
    assert body == b'{"hello": "ada", "url": "/fn/shop/hello/ada", "q": "1"}'


def test_only_the_flask_styles_import_flask() -> None:
    """The platform may not have Flask: it is the functions' (their requirements get it)."""
    allowed = {"invoker/styles/flaskapp.py", "invoker/styles/gcf.py"}
    frameworks = {"flask", "werkzeug", "functions_framework", "cloudevents"}
    offenders = []
    for package in ("builds", "calls", "config", "events", "fn", "gateway", "invoker", "scheduler"):
        for path in (ROOT / package).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                if any(n.split(".")[0] in frameworks for n in names) and relative not in allowed:
                    offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []


def test_binding_imports_no_framework() -> None:
    """Binding a plain WSGI app needs nothing but the standard library."""
    before = set(sys.modules)

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        return [io.BytesIO(b"ok").read()]

    assert run(bind(app, info()), call())[2] == b"ok"
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("flask", "werkzeug")}


def test_a_generated_response_stops_at_the_platforms_limit() -> None:
    from invoker.styles import ResponseTooLarge
    from invoker.styles.wsgi import call_app

    closed = []

    class Endless:
        def __iter__(self) -> Any:
            while True:
                yield b"x" * 1024

        def close(self) -> None:
            closed.append(True)

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return Endless()

    with pytest.raises(ResponseTooLarge, match="past 10000 bytes"):
        call_app(app, {}, 10_000)
    assert closed == [True]
