"""The fission style in process: `main()` reading Flask's request, its results made responses
by Flask (invoker/styles/fission.py, flaskapp.py). Flask is the functions', not the platform's:
without it in the platform's venv these tests skip (tests/integration/test_style_fission.py
deploys the same shapes with Flask installed by the deploy)."""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any

import orjson
import pytest

from invoker.styles import BindInfo, Bound, Outgoing, StyleMismatch, bind
from tests.unit.test_style_wsgi import call

flask = pytest.importorskip("flask")


def fission(main: Any, module: Any = None) -> Bound:
    bound = bind(
        main,
        BindInfo(
            style="fission",
            entry="main",
            module=module or types.ModuleType("hello"),
            function="hello",
            version=1,
            memory_mb=128,
            timeout_s=30.0,
        ),
    )
    assert not bound.is_async
    return bound


def run(bound: Bound, **kwargs: Any) -> Outgoing:
    result: Outgoing = bound.run(call(**kwargs))
    return result


def header(headers: list[list[str]], name: str) -> str:
    return next(v for k, v in headers if k.lower() == name.lower())


def test_a_string_is_html_with_200() -> None:
    status, headers, body = run(fission(lambda: "Hello, world!\n"))
    assert (status, body) == (200, b"Hello, world!\n")
    assert header(headers, "Content-Type") == "text/html; charset=utf-8"


def test_tuples_set_the_status_and_headers() -> None:
    assert run(fission(lambda: ("Not Found\n", 404)))[::2] == (404, b"Not Found\n")
    status, headers, body = run(fission(lambda: ("made", 201, {"Location": "/things/1"})))
    assert (status, header(headers, "Location"), body) == (201, "/things/1", b"made")
    status, headers, _ = run(fission(lambda: ("x", {"X-Kind": "headers only"})))
    assert (status, header(headers, "X-Kind")) == (200, "headers only")


def test_dicts_lists_and_flask_responses() -> None:
    status, headers, body = run(fission(lambda: {"b": 1, "a": [1, 2]}))
    assert status == 200
    assert header(headers, "Content-Type") == "application/json"
    assert orjson.loads(body) == {"a": [1, 2], "b": 1}
    assert orjson.loads(run(fission(lambda: [1, 2]))[2]) == [1, 2]
    status, headers, _ = run(fission(lambda: flask.redirect("/guestbook", code=303)))
    assert (status, header(headers, "Location")) == (303, "/guestbook")
    status, headers, body = run(fission(lambda: flask.Response(b"\x00\x01", mimetype="image/png")))
    assert (status, header(headers, "Content-Type"), body) == (200, "image/png", b"\x00\x01")


def test_main_reads_the_request() -> None:
    def main() -> Any:
        request = flask.request
        return {
            "method": request.method,
            "path": request.path,
            "url": request.url,
            "args": request.args.to_dict(flat=False),
            "json": request.get_json(silent=True),
            "trace": request.headers.get("X-Trace"),
        }

    bound = fission(main)
    status, _, body = run(
        bound,
        body=b'{"name": "ada"}',
        method="PATCH",  # Fission's routes leave PATCH out; every method reaches main here
        path="/a/b",
        query="x=1&x=2",
        headers=[("Host", "localhost:8080"), ("X-Trace", "t1")],
        content_type="application/json",
    )
    assert orjson.loads(body) == {
        "method": "PATCH",
        "path": "/a/b",
        "url": "http://localhost:8080/fn/hello/a/b?x=1&x=2",
        "args": {"x": ["1", "2"]},
        "json": {"name": "ada"},
        "trace": "t1",
    }
    assert status == 200


def test_forms_and_raw_bodies() -> None:
    def main() -> Any:
        if flask.request.form:
            return f"text={flask.request.form['text']}"
        return flask.request.get_data()

    assert run(
        fission(main),
        body=b"text=hi+there",
        method="POST",
        content_type="application/x-www-form-urlencoded",
    )[2] == (b"text=hi there")
    assert run(fission(main), body=b"\xff\x00", method="POST")[2] == b"\xff\x00"


def test_errors() -> None:
    def fails() -> str:
        raise RuntimeError("redis is down")

    with pytest.raises(RuntimeError, match="redis is down"):  # the function's error: a 500
        run(fission(fails))

    def forbidden() -> None:
        flask.abort(403)

    assert run(fission(forbidden))[0] == 403

    with pytest.raises(TypeError, match="did not return a valid response"):
        run(fission(lambda: None))


def test_an_event_is_a_post_of_its_payload() -> None:
    def main() -> Any:
        return {"method": flask.request.method, "got": flask.request.get_json()}

    body = run(
        fission(main),
        body=b'{"n": 1}',
        method="GET",
        content_type="application/json",
        source="schedule",
    )[2]
    assert orjson.loads(body) == {"method": "POST", "got": {"n": 1}}


def test_the_app_logger_writes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    def main() -> str:
        flask.current_app.logger.debug("Received request")
        return "ok"

    with caplog.at_level(logging.DEBUG):
        assert run(fission(main))[2] == b"ok"
    assert "Received request" in caplog.text


def test_templates_beside_the_module(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hi.html").write_text("<p>hi {{ name }}</p>")
    module = types.ModuleType("page")
    module.__file__ = str(tmp_path / "page.py")
    bound = fission(lambda: flask.render_template("hi.html", name=flask.request.args["n"]), module)
    assert run(bound, query="n=ada")[2] == b"<p>hi ada</p>"


def test_main_must_take_no_argument() -> None:
    def main(args: Any) -> Any:
        return args

    with pytest.raises(StyleMismatch, match=r"def main\(args: 'Any'\) .* fit the fission style"):
        fission(main)


def test_route_parameters_as_fission_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    def main() -> Any:
        headers = flask.request.headers
        return {
            "id": headers.get("X-Fission-Params-Id"),
            "name": headers.get("X-Fission-Params-name"),
        }

    monkeypatch.setenv("FISSION_ROUTE", "/items/{id:[0-9_]+}/{name} /hello/{id:[a-z]{2,3}}")
    bound = fission(main)
    assert orjson.loads(run(bound, path="/items/12_3/ada")[2]) == {"id": "12_3", "name": "ada"}
    assert orjson.loads(run(bound, path="/items/x/ada")[2]) == {"id": None, "name": None}
    assert orjson.loads(run(bound, path="/ab")[2]) == {"id": "ab", "name": None}  # /hello/ab
    assert orjson.loads(run(bound, path="/abcd")[2]) == {"id": None, "name": None}
    monkeypatch.setenv("FISSION_ROUTE", "/items/{id:(a|b)}")
    with pytest.raises(StyleMismatch, match=r"non-capturing groups \(\?:...\)"):
        fission(main)
    monkeypatch.setenv("FISSION_ROUTE", "/items/{id:[}")
    with pytest.raises(StyleMismatch, match="is not a route template"):
        fission(main)
