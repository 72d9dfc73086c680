"""WSGI apps deployed and called through the gateway: a Flask app (Flask installed by the deploy,
which finds the import), served whole with its routes, methods, sub-paths, query strings,
headers, cookies and errors; an async call; a topic's event."""

from __future__ import annotations

import asyncio
import textwrap
import time
from typing import Any

import pytest

from tests.conftest import Running

pytestmark = pytest.mark.timeout(240)  # the first deploy installs Flask

FLASK_APP = textwrap.dedent("""
    from flask import Flask, Response, abort, jsonify, make_response, request, url_for

    app = Flask(__name__)


    @app.route("/", methods=["GET", "POST"])
    def index():
        if request.method == "POST":  # an event
            print("event:", request.get_data(as_text=True), request.headers["X-Ember-Topic"])
            return "done"
        return "home"


    @app.route("/items/<int:item>", methods=["GET", "PUT", "DELETE"])
    def items(item):
        if request.method == "DELETE":
            return "", 204
        return jsonify(
            item=item,
            method=request.method,
            json=request.get_json(silent=True),
            args=request.args.to_dict(flat=False),
            url=url_for("items", item=item, _external=True),
            trace=request.headers.get("X-Trace"),
            cookie=request.cookies.get("session"),
        )


    @app.route("/login", methods=["POST"])
    def login():
        response = make_response({"user": request.form["user"]}, 201)
        response.set_cookie("session", "s1")
        response.set_cookie("theme", "dark")
        response.headers["X-Handled-By"] = "flask"
        return response


    @app.route("/image")
    def image():
        return Response(bytes(range(256)), mimetype="image/png")


    @app.route("/teapot")
    def teapot():
        abort(418)


    @app.route("/boom")
    def boom():
        raise RuntimeError("the database is down")
""")


async def wait_for_activation(
    running: Running, function: str, text: str, timeout_s: float = 20.0
) -> dict[str, Any]:
    """The activation of `function` whose logs hold `text` (recorded in batches: polled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, data = await running.admin("GET", f"/v1/functions/{function}/activations")
        assert status == 200, data
        for activation in data["activations"]:
            if text in (activation["logs"] or ""):
                return dict(activation)
        assert time.monotonic() < deadline, f"no activation of {function} logged {text!r}"
        await asyncio.sleep(0.05)


async def wait_for_async(running: Running, activation_id: str) -> dict[str, Any]:
    """An async call's record once it has run (what `fn activation ID --wait` does)."""
    deadline = time.monotonic() + 20.0
    while True:
        status, data = await running.admin("GET", f"/v1/activations/{activation_id}")
        assert status == 200, data
        if data["status"] in ("succeeded", "dead", "failed"):
            return dict(data)
        assert time.monotonic() < deadline, f"still {data['status']}: {data}"
        await asyncio.sleep(0.05)


async def publish(running: Running, function: str, topic: str, payload: Any) -> None:
    """Subscribe `function` to `topic` and publish `payload` on it."""
    status, _ = await running.admin("PUT", f"/v1/topics/{topic}")
    assert status in (200, 201)
    status, data = await running.admin(
        "POST", f"/v1/functions/{function}/triggers", json={"topic": topic}
    )
    assert status == 201, data
    status, data = await running.admin("POST", f"/v1/events/{topic}", json=payload)
    assert (status, data["deliveries"]) == (202, 1), data


async def test_a_flask_app_served_whole(running: Running) -> None:
    deployed = await running.deploy_ok("shop", FLASK_APP, style="wsgi", entry="app")
    assert deployed["style"] == "wsgi"
    assert deployed["added_requirements"] == ["flask"]
    url = f"{running.url}/fn/shop"

    async with running.http.get(url) as response:
        assert (response.status, await response.text()) == (200, "home")

    async with running.http.put(
        f"{url}/items/7?x=1&x=2&name=caf%C3%A9&off=50%25+off&pct=100%2541&plus=%2B",
        json={"qty": 2},
        headers={"X-Trace": "t-1", "Cookie": "session=abc"},
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        data = await response.json()
    assert data == {
        "item": 7,
        "method": "PUT",
        "json": {"qty": 2},
        "args": {
            "x": ["1", "2"],
            "name": ["caf\u00e9"],
            "off": ["50% off"],
            "pct": ["100%41"],
            "plus": ["+"],
        },
        "url": f"{url}/items/7",
        "trace": "t-1",
        "cookie": "abc",
    }

    async with running.http.delete(f"{url}/items/7") as response:
        assert response.status == 204
    async with running.http.post(f"{url}/items/7") as response:
        assert response.status == 405  # the app's own routing

    async with running.http.post(f"{url}/login", data={"user": "ada"}) as response:
        assert response.status == 201
        assert await response.json() == {"user": "ada"}
        cookies = response.headers.getall("Set-Cookie")
        assert [c.split(";")[0] for c in cookies] == ["session=s1", "theme=dark"]
        assert response.headers["X-Handled-By"] == "flask"

    async with running.http.get(f"{url}/image") as response:
        assert response.headers["Content-Type"] == "image/png"
        assert await response.read() == bytes(range(256))

    async with running.http.get(f"{url}/teapot") as response:
        assert response.status == 418
    async with running.http.get(f"{url}/nowhere") as response:
        assert response.status == 404
    async with running.http.get(f"{url}/boom") as response:
        assert response.status == 500  # Flask's own error page; its log has the traceback
    failed = await wait_for_activation(running, "shop", "the database is down")
    assert (failed["status"], failed["http_status"]) == ("error", 500)

    async with running.http.put(
        f"{url}/items/3", json={"later": True}, headers={"Prefer": "respond-async"}
    ) as response:
        assert response.status == 202
        accepted = await response.json()
    done = await wait_for_async(running, accepted["activation_id"])
    assert done["status"] == "succeeded"
    assert done["result"]["json"] == {"later": True}
    assert done["result"]["method"] == "PUT"

    await publish(running, "shop", "orders", {"n": 1})
    event = await wait_for_activation(running, "shop", "event:")
    assert event["status"] == "success"
    assert event["logs"].replace(" ", "") == 'event:{"n":1}orders\n'

    # An application factory, called once per instance; the same environment (built once).
    deployed = await running.deploy_ok("factory", FACTORY, style="wsgi", entry="create_app")
    assert deployed["added_requirements"] == ["flask"]
    async with running.http.get(f"{running.url}/fn/factory/hello/ada") as response:
        assert await response.json() == {"hello": "ada", "greeting": "made by create_app"}


FACTORY = textwrap.dedent("""
    from flask import Flask

    def create_app(config=None):
        app = Flask(__name__)
        app.config["GREETING"] = "made by create_app"

        @app.get("/hello/<name>")
        def hello(name):
            return {"hello": name, "greeting": app.config["GREETING"]}

        return app
""")


DJANGO = textwrap.dedent("""
    # One file: the settings (DJANGO_SETTINGS_MODULE=handler), the URLs and the WSGI app.
    from django.http import JsonResponse
    from django.urls import path, reverse

    SECRET_KEY = "not-a-secret"
    DEBUG = False
    ALLOWED_HOSTS = ["*"]
    ROOT_URLCONF = "handler"


    def hello(request, name):
        return JsonResponse(
            {"hello": name, "url": reverse("hello", args=[name]), "q": request.GET.get("q")}
        )


    urlpatterns = [path("hello/<name>", hello, name="hello")]

    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
""")


async def test_a_django_app(running: Running) -> None:
    deployed = await running.deploy_ok(
        "site",
        DJANGO,
        requirements="django\n",
        env={"DJANGO_SETTINGS_MODULE": "handler"},
    )
    assert (deployed["style"], deployed["handler"]) == ("wsgi", "application")  # detected
    async with running.http.get(f"{running.url}/fn/site/hello/ada?q=1") as response:
        assert response.status == 200
        assert await response.json() == {"hello": "ada", "url": "/fn/site/hello/ada", "q": "1"}
    async with running.http.get(f"{running.url}/fn/site/nowhere") as response:
        assert response.status == 404
