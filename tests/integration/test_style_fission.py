"""Fission functions deployed unchanged and called through the gateway: `main()` reading
Flask's request, returning strings, tuples, dicts and Flask responses; Flask installed by the
deploy (the style needs it); an async call; a topic's event."""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import Running
from tests.integration.test_style_wsgi import publish, wait_for_activation, wait_for_async

pytestmark = pytest.mark.timeout(240)  # the first deploy installs Flask

HELLO = textwrap.dedent("""
    def main():
        return "Hello, world!\\n"
""")

REQUEST = textwrap.dedent("""
    from flask import Response, current_app, jsonify, request


    def main():
        current_app.logger.info("%s %s", request.method, request.path)
        if request.headers.get("X-Ember-Topic"):
            print("event:", request.get_data(as_text=True))
            return "done"
        if request.path == "/missing":
            return "Not Found\\n", 404
        if request.path == "/created":
            return "made\\n", 201, {"Location": "/things/1", "X-Trace": request.headers["X-Trace"]}
        if request.path == "/dict":
            return {"b": [1, 2], "a": None}
        if request.path == "/binary":
            return Response(bytes(range(256)), mimetype="application/octet-stream")
        if request.path == "/boom":
            raise ValueError("bad input: " + request.get_data(as_text=True))
        return jsonify(
            method=request.method,
            path=request.path,
            args=request.args.to_dict(flat=False),
            json=request.get_json(silent=True),
            form=request.form.to_dict(),
        )
""")

ROUTED = textwrap.dedent("""
    from flask import request


    def main():
        return "item " + request.headers["X-Fission-Params-Id"]
""")


async def test_fission_functions(running: Running) -> None:
    deployed = await running.deploy_ok("hello", HELLO)
    assert deployed["style"] == "fission"  # detected: main() takes nothing
    # found missing by the import check, then Fission's own Flask 2 once the style was known
    assert deployed["added_requirements"] == ["flask<2.3", "werkzeug<3"]
    async with running.http.get(f"{running.url}/fn/hello") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert await response.text() == "Hello, world!\n"

    deployed = await running.deploy_ok("echo", REQUEST, style="fission", entry="main")
    assert deployed["added_requirements"] == ["flask<2.3", "werkzeug<3"]  # Fission's Flask 2
    url = f"{running.url}/fn/echo"
    async with running.http.patch(f"{url}/a/b?x=1&x=2", json={"name": "ada"}) as response:
        assert response.status == 200
        assert await response.json() == {
            "method": "PATCH",
            "path": "/a/b",
            "args": {"x": ["1", "2"]},
            "json": {"name": "ada"},
            "form": {},
        }
    async with running.http.post(url, data={"text": "hi there"}) as response:
        assert (await response.json())["form"] == {"text": "hi there"}
    async with running.http.get(f"{url}/missing") as response:
        assert (response.status, await response.text()) == (404, "Not Found\n")
    async with running.http.post(f"{url}/created", headers={"X-Trace": "t-1"}) as response:
        assert response.status == 201
        assert (response.headers["Location"], response.headers["X-Trace"]) == ("/things/1", "t-1")
    async with running.http.get(f"{url}/dict") as response:
        assert response.headers["Content-Type"] == "application/json"
        assert await response.json() == {"a": None, "b": [1, 2]}
    async with running.http.get(f"{url}/binary") as response:
        assert await response.read() == bytes(range(256))
    async with running.http.post(f"{url}/boom", data=b"x=1") as response:
        assert response.status == 500
        error = (await response.json())["error"]
        assert error["type"] == "ValueError"
        assert error["message"] == "bad input: x=1"
    failed = await wait_for_activation(running, "echo", "ValueError: bad input: x=1")
    assert failed["status"] == "error"
    assert "POST /boom" in failed["logs"]  # current_app.logger's line

    async with running.http.put(
        f"{url}/later", json={"n": 1}, headers={"Prefer": "respond-async"}
    ) as response:
        assert response.status == 202
        accepted = await response.json()
    done = await wait_for_async(running, accepted["activation_id"])
    assert done["status"] == "succeeded"
    assert (done["result"]["method"], done["result"]["json"]) == ("PUT", {"n": 1})

    # An entry point that does not fit is refused at deploy, saying what fits.
    response = await running.deploy(
        "echo", "def main(args):\n    return args\n", style="fission", entry="main"
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "style_mismatch"
    assert error["message"].startswith("def main(args) does not fit the fission style")

    # Route parameters, as Fission's router gives them.
    await running.deploy_ok(
        "items",
        ROUTED,
        style="fission",
        entry="main",
        env={"FISSION_ROUTE": "/items/{id:[0-9]+}"},
    )
    async with running.http.get(f"{running.url}/fn/items/42") as response:
        assert await response.text() == "item 42"

    await publish(running, "echo", "greetings", {"hello": "fission"})
    event = await wait_for_activation(running, "echo", "event:")
    assert event["status"] == "success"
    assert event["logs"].endswith('event: {"hello": "fission"}\n')
