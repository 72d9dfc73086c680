"""Deploying in a style: detection at the import check, refusals that name the style and the
expected signature, a main module in a package directory, and a handler's own error status
recorded as an error."""

from __future__ import annotations

import base64
import io
import textwrap
import zipfile

from tests.conftest import Running


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


async def test_the_style_is_detected_once_and_stored_with_the_version(running: Running) -> None:
    deployed = await running.deploy_ok("plain", "def handler(event, context):\n    return 1\n")
    assert (deployed["style"], deployed["handler"], deployed["style_detected"]) == (
        "ember",
        "handler",
        True,
    )
    assert deployed["added_requirements"] == []
    _, versions = await running.admin("GET", "/v1/functions/plain/versions")
    assert versions["versions"][0]["style"] == "ember"
    explicit = await running.deploy_ok(
        "plain", "def handler(event, context):\n    return 1\n", style="ember"
    )
    assert explicit["style_detected"] is False


async def test_a_handler_that_fits_no_style_is_refused_at_deploy(running: Running) -> None:
    one_arg = "def handler(event):\n    return event\n"
    response = await running.deploy("lonely", one_arg, style="ember")
    body = await response.json()
    assert response.status == 422, body
    assert body["error"]["code"] == "style_mismatch"
    assert body["error"]["message"].startswith(
        "def handler(event) does not fit the ember style, which expects def handler(event, context)"
    )
    response = await running.deploy("lonely", one_arg)  # auto: not obvious
    body = await response.json()
    assert response.status == 422, body
    assert "not obvious" in body["error"]["message"]
    assert "--style" in body["error"]["message"]
    status, _ = await running.admin("GET", "/v1/functions/lonely")
    assert status == 404  # nothing was stored

    response = await running.deploy("lonely", one_arg, style="cobol")
    assert response.status == 400
    assert "--style" in (await response.json())["error"]["message"]


async def test_the_main_module_may_live_in_a_package_directory(running: Running) -> None:
    files = {
        "hello_world/__init__.py": "",
        "hello_world/app.py": textwrap.dedent("""
            from .greeting import greet

            def handler(event, context):
                return {"greeting": greet(event.get("name", "world")), "module": __name__}
        """),
        "hello_world/greeting.py": "def greet(name):\n    return f'hello {name}'\n",
    }
    deployed = await running.deploy_ok(
        "nested",
        files["hello_world/app.py"],
        filename="hello_world/app.py",
        archive=zipped(files),
    )
    assert deployed["filename"] == "hello_world/app.py"
    response = await running.call("nested", {"name": "ada"})
    assert await response.json() == {"greeting": "hello ada", "module": "hello_world.app"}

    response = await running.deploy("nested", files["hello_world/app.py"], filename="pkg/app.py")
    body = await response.json()
    assert response.status == 400
    assert "deploy the directory" in body["error"]["message"]


async def test_a_handlers_own_error_status_reaches_the_caller_and_counts_as_an_error(
    running: Running,
) -> None:
    source = textwrap.dedent("""
        def handler(event, context):
            return context.response(b"upstream is down", status=503, headers={"X-Why": "db"})
    """)
    await running.deploy_ok("down", source)
    response = await running.call("down", {})
    assert response.status == 503
    assert response.headers["X-Why"] == "db"
    assert await response.read() == b"upstream is down"
    _, activation = await running.admin(
        "GET", f"/v1/activations/{response.headers['X-Ember-Activation-Id']}"
    )
    assert (activation["status"], activation["http_status"]) == ("error", 503)
    assert activation["error"] == {"type": "HTTP503", "message": "upstream is down"}


async def test_a_response_header_that_would_split_the_response_is_a_502(running: Running) -> None:
    source = textwrap.dedent("""
        def handler(event, context):
            name, value = event["name"], event["value"]
            return context.response(b"ok", headers={name: value})
    """)
    await running.deploy_ok("splitter", source)
    for name, value in (("X-A", "a\r\nX-B: 1"), ("Bad Name", "x"), ("X-Nul", "a\x00b")):
        response = await running.call("splitter", {"name": name, "value": value})
        body = await response.json()
        assert response.status == 502, body
        assert body["error"]["code"] == "invalid_response"
        _, activation = await running.admin(
            "GET", f"/v1/activations/{response.headers['X-Ember-Activation-Id']}"
        )
        assert activation["status"] == "error"
    assert (await running.call("splitter", {"name": "X-Ok", "value": "fine"})).status == 200


async def test_a_function_runs_in_its_own_directory(running: Running) -> None:
    files = {
        "handler.py": "def handler(event, context):\n    return open('data/greeting.txt').read()\n",
        "data/greeting.txt": "hello from my files",
    }
    await running.deploy_ok(
        "files", files["handler.py"], filename="handler.py", archive=zipped(files)
    )
    response = await running.call("files", {})
    assert await response.text() == "hello from my files"


async def test_an_app_in_a_packages_init_is_imported_as_the_package(running: Running) -> None:
    files = {
        "api/__init__.py": "from .routes import app\n",
        "api/routes.py": textwrap.dedent("""
            async def app(scope, receive, send):
                assert scope["type"] == "http"
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": __name__.encode()})
        """),
    }
    deployed = await running.deploy_ok(
        "pkg-app",
        files["api/__init__.py"],
        filename="api/__init__.py",
        archive=zipped(files),
        style="asgi",
        entry="app",
    )
    assert deployed["style"] == "asgi"
    assert await (await running.call("pkg-app", {})).text() == "api.routes"
