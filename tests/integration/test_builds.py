"""Functions with dependencies: real requirements installed from the package index."""

from __future__ import annotations

import base64
import io
import shutil
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PlatformFactory, Running

pytestmark = pytest.mark.timeout(300)

SIX = textwrap.dedent("""
    import sys
    import six

    def handler(event, context):
        return {"six": six.__version__}
""")


async def test_requirements_are_installed_once_and_shared(running: Running) -> None:
    first = await running.deploy_ok("uses-six", SIX, requirements="six==1.16.0\n")
    assert first["environment"]
    assert first["lock"].startswith("six==1.16.0 --hash=sha256:")
    response = await running.call("uses-six", {})
    assert (response.status, await response.json()) == (200, {"six": "1.16.0"})

    # Another function, the same requirements (written differently): the same environment.
    other = await running.deploy_ok(
        "also-six", SIX, requirements="# pinned\n\nsix==1.16.0   # ok\n"
    )
    assert other["environment"] == first["environment"]
    status, builds = await running.admin("GET", "/v1/functions/also-six/builds")
    assert (status, [b["status"] for b in builds["builds"]]) == (200, ["cached"])
    _, builds = await running.admin("GET", "/v1/functions/uses-six/builds")
    assert builds["builds"][0]["status"] == "succeeded"
    assert "Successfully installed six-1.16.0" in builds["builds"][0]["log"]

    # New requirements: a new environment; the old version keeps its own.
    second = await running.deploy_ok("uses-six", SIX, requirements="six==1.15.0\n")
    assert second["environment"] != first["environment"]
    assert await (await running.call("uses-six", {})).json() == {"six": "1.15.0"}
    assert await (await running.call("uses-six:1", {})).json() == {"six": "1.16.0"}


async def test_a_failed_build_keeps_the_previous_version_serving(running: Running) -> None:
    await running.deploy_ok("uses-six", SIX, requirements="six==1.16.0\n")
    response = await running.deploy(
        "uses-six", SIX, requirements="six==1.16.0\nember-no-such-package==1.0\n"
    )
    data = await response.json()
    assert response.status == 422
    assert data["error"]["code"] == "build_failed"
    assert "ERROR: " in data["error"]["message"]
    assert "ember-no-such-package" in data["error"]["message"]
    assert await (await running.call("uses-six", {})).json() == {"six": "1.16.0"}
    _, function = await running.admin("GET", "/v1/functions/uses-six")
    assert function["active_version"] == 1
    _, builds = await running.admin("GET", "/v1/functions/uses-six/builds")
    assert builds["builds"][0]["status"] == "failed"
    assert "ember-no-such-package" in builds["builds"][0]["log"]

    for refused in (
        "-e ./mylib",
        "-rfoo",
        "--requirem x",
        "x @ file:///etc",
        "-f /dir",
        "--target /tmp/x",
        "./pkg",
    ):
        response = await running.deploy("uses-six", SIX, requirements=refused + "\n")
        assert (response.status, (await response.json())["error"]["code"]) == (
            400,
            "bad_requirements",
        ), refused


COMPILED = textwrap.dedent("""
    import markupsafe
    from markupsafe import _speedups   # the compiled extension, not the pure-Python fallback

    def handler(event, context):
        return str(markupsafe.escape(event["text"]))
""")


async def test_a_compiled_wheel_works(running: Running) -> None:
    deployed = await running.deploy_ok("escape", COMPILED, requirements="MarkupSafe==2.1.5\n")
    assert "MarkupSafe==2.1.5" in deployed["lock"]
    response = await running.call("escape", {"text": "<b>"})
    assert await response.text() == "&lt;b&gt;"


def _zip(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


async def test_a_directory_with_modules_and_preimports(running: Running) -> None:
    files = {
        "handler.py": "import sys\nfrom lib.greet import greet\n\n"
        "def handler(event, context):\n"
        "    return {'text': greet(event['name']),\n"
        "            'preimported': 'six' in sys.modules}\n",
        "lib/__init__.py": "",
        "lib/greet.py": "def greet(name):\n    return f'hello {name}'\n",
        "data/greeting.txt": "not code\n",
    }
    deployed = await running.deploy_ok(
        "greeter",
        files["handler.py"],
        archive=_zip(files),
        requirements="six==1.16.0\n",
        preimport="six",
    )
    assert deployed["files"] == sorted(files)
    response = await running.call("greeter", {"name": "ann"})
    assert await response.json() == {"text": "hello ann", "preimported": True}

    bad = {**files, "lib/broken.py": "def f(:\n"}
    response = await running.deploy("greeter", files["handler.py"], archive=_zip(bad))
    data = await response.json()
    assert (response.status, data["error"]["code"]) == (400, "syntax_error")
    assert data["error"]["message"].startswith("lib/broken.py, line 1")
    response = await running.deploy("greeter", None, archive=_zip({**files, "../evil.py": ""}))
    assert (response.status, (await response.json())["error"]["code"]) == (400, "bad_archive")


async def test_a_new_node_fetches_the_environment_from_the_database(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    async with make_platform() as running:
        deployed = await running.deploy_ok("uses-six", SIX, requirements="six==1.16.0\n")
    # Another node: its cache does not have the environment (here: the cache is emptied).
    cache = tmp_path / "state" / "envs"
    for path in [cache, *cache.rglob("*")]:  # environments are made read-only
        if not path.is_symlink():
            path.chmod(0o700)
    shutil.rmtree(cache)
    async with make_platform() as running:
        response = await running.call("uses-six", {})
        assert (response.status, await response.json()) == (200, {"six": "1.16.0"})
        assert (tmp_path / "state" / "envs" / deployed["environment"]).is_dir()


def test_the_build_sees_no_platform_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from builds.packing import build_env

    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@db/ember")
    monkeypatch.setenv("FN_TOKEN", "admin-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    env = build_env(tmp_path)
    assert "DATABASE_URL" not in env
    assert "FN_TOKEN" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert env["HOME"] == str(tmp_path)
