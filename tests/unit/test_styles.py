"""The style machinery: detection of a handler's style, Ember's own style through the interface,
and the packages a deploy adds for the platform a function was written for."""

from __future__ import annotations

import os
import time
import types
from pathlib import Path
from typing import Any

import pytest

from gateway.frameworks import (
    imported_modules,
    missing_module,
    missing_packages,
    requirement_names,
    with_packages,
)
from invoker import styles
from invoker.context import Context, Response
from invoker.styles.detect import before_import, classify, detect_style, resolve_entry


def module(**names: Any) -> types.ModuleType:
    """A module that defines `names` (so named as this file: its functions are its own)."""
    mod = types.ModuleType(__name__)
    mod.__file__ = "/tmp/code/handler.py"
    for key, value in names.items():
        setattr(mod, key, value)
    return mod


def lambda_handler(event: Any, context: Any) -> Any: ...
def handler(event: Any, context: Any) -> Any: ...
def main_args(args: Any) -> Any: ...
def main_none() -> Any: ...
def main_context(context: Any) -> Any: ...
def handle2(event: Any, context: Any) -> Any: ...
def handle1(req: Any) -> Any: ...
def hello_http(request: Any) -> Any: ...
def new() -> Any: ...
async def asgi_app(scope: Any, receive: Any, send: Any) -> None: ...
def wsgi_app(environ: Any, start_response: Any) -> Any: ...
def one_event(event: Any) -> Any: ...


class AsgiObject:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class WsgiObject:
    def __call__(self, environ: Any, start_response: Any) -> Any: ...


class FlaskLike:
    def wsgi_app(self, environ: Any, start_response: Any) -> Any: ...

    def __call__(self, environ: Any, start_response: Any) -> Any: ...


@pytest.mark.parametrize(
    ("name", "target", "style"),
    [
        ("lambda_handler", lambda_handler, "lambda"),
        ("handler", handler, "ember"),
        ("hello", handler, "ember"),
        ("main", main_args, "openwhisk"),
        ("main", main_none, "fission"),
        ("main", main_context, "knative"),
        ("handle", handle2, "openfaas"),
        ("handle", handle1, "openfaas"),
        ("hello_http", hello_http, "gcf"),
        ("new", new, "knative"),
        ("app", asgi_app, "asgi"),
        ("app", AsgiObject(), "asgi"),
        ("app", wsgi_app, "wsgi"),
        ("application", WsgiObject(), "wsgi"),
        ("app", FlaskLike(), "wsgi"),
        ("process", one_event, None),
        ("App", AsgiObject, None),  # a class is not an app
    ],
)
def test_a_style_is_detected_only_when_it_is_obvious(name: str, target: Any, style: str) -> None:
    assert classify(name, target) == style


def test_detection_falls_back_to_the_names_platforms_use() -> None:
    assert detect_style(module(lambda_handler=lambda_handler), "handler")[:2] == (
        "lambda",
        "lambda_handler",
    )
    assert detect_style(module(main=main_args, handle=handle2), "handler")[:2] == (
        "openwhisk",
        "main",
    )
    # an explicit entry point is not replaced
    with pytest.raises(LookupError, match='defines no function "process"'):
        detect_style(module(main=main_args), "process")
    with pytest.raises(styles.StyleMismatch, match=r"not obvious.*--style"):
        detect_style(module(process=one_event), "process")


def test_an_entry_point_may_be_an_attribute_path() -> None:
    api = types.SimpleNamespace(app=AsgiObject())
    assert isinstance(resolve_entry(module(api=api), "api.app", "handler.py"), AsgiObject)
    with pytest.raises(LookupError, match=r'has no "api\.nope"'):
        resolve_entry(module(api=api), "api.nope", "handler.py")
    with pytest.raises(LookupError, match="is a int, not a function"):
        resolve_entry(module(limit=3), "limit", "handler.py")


def context() -> Context:
    return Context(function="f", version=1, activation_id="a", deadline=time.monotonic() + 5)


def info(style: str = "ember", entry: str = "handler") -> styles.BindInfo:
    return styles.BindInfo(
        style=style,
        entry=entry,
        module=module(),
        function="f",
        version=1,
        memory_mb=256,
        timeout_s=30,
    )


def test_ember_style_through_the_interface() -> None:
    def echo(event: Any, ctx: Context) -> Any:
        return {"event": event, "path": ctx.path}

    bound = styles.bind(echo, info())
    assert not bound.is_async
    call = styles.Incoming(body=b'{"a": 1}', content_type="application/json", context=context())
    assert bound.run(call) == (
        200,
        [["Content-Type", "application/json"]],
        b'{"event":{"a":1},"path":"/"}',
    )
    with pytest.raises(styles.BadRequest, match="not valid JSON"):
        bound.run(styles.Incoming(body=b"{", content_type="application/json", context=context()))

    def teapot(event: Any, ctx: Context) -> Response:
        return Response(body="no", status=418)

    assert styles.bind(teapot, info()).run(call)[0] == 418


async def test_an_async_ember_handler_is_bound_as_async() -> None:
    async def echo(event: Any, ctx: Context) -> Any:
        return event

    bound = styles.bind(echo, info())
    assert bound.is_async
    out = await bound.run(styles.Incoming(body=b"raw", context=context()))
    assert out == (200, [["Content-Type", "application/octet-stream"]], b"raw")


def test_a_handler_that_does_not_fit_is_refused_naming_the_style_and_signature() -> None:
    with pytest.raises(styles.StyleMismatch) as refused:
        styles.bind(one_event, info(entry="process"))
    assert str(refused.value).startswith(
        "def process(event) does not fit the ember style, which expects def handler(event, context)"
    )
    assert "--style" in str(refused.value)
    with pytest.raises(styles.UnknownStyle, match="unknown style 'pulumi'"):
        styles.load("pulumi")


def test_an_event_is_not_an_http_request() -> None:
    assert not styles.Incoming(body=b"", source="async", context=context()).is_event
    assert styles.Incoming(body=b"", source="schedule", context=context()).is_event
    call = styles.Incoming(body=b"", headers=[("X-A", "1"), ("x-a", "2")], context=context())
    assert call.header("x-A") == "1"
    assert call.header("missing", "none") == "none"


def test_frameworks_the_platforms_provide_are_added_unless_named() -> None:
    files = {
        "main.py": "import functions_framework\nfrom flask import jsonify\nimport os\n",
        "lib/util.py": "from . import x\nimport boto3.session\n",
    }
    assert imported_modules(files) == {"functions_framework", "flask", "os", "boto3"}
    # (functions-framework brings its Flask and cloudevents: not added beside it)
    assert missing_packages("gcf", files, "") == ["boto3", "functions-framework"]
    assert missing_packages("gcf", files, "Flask==3.0\n# note\nboto3>=1\n") == [
        "functions-framework"
    ]
    # Fission's environment: the Flask 2 it ships, and what else it has
    assert missing_packages("fission", {"h.py": "def main(): ...\n"}, "") == [
        "flask<2.3",
        "werkzeug<3",
    ]
    assert missing_packages("fission", {"h.py": "import redis\n"}, "flask\n") == ["redis"]
    assert missing_packages("lambda", {"h.py": "import redis\n"}, "") == []
    # pip's hash-checking mode takes nothing unpinned: nothing is added
    assert missing_packages("gcf", files, "six==1.16.0 --hash=sha256:abc\n") == []
    # a function's own module of that name is not a package to install
    assert missing_packages("lambda", {"boto3.py": "", "h.py": "import boto3\n"}, "") == []
    assert requirement_names("functions_framework==3\n-r other.txt\n") == {"functions-framework"}
    assert with_packages("requests\n", ["flask"]).splitlines()[0] == "requests"
    assert with_packages("", ["flask"]).startswith("flask  #")
    found = {"type": "ModuleNotFoundError", "message": "No module named 'flask'"}
    assert missing_module(found) == "flask"
    assert missing_module({**found, "message": "No module named 'numpy'"}) is None


def test_the_cli_offers_the_styles_the_platform_has() -> None:
    from fn.cli.functions import STYLES as CLI_STYLES
    from invoker.protocol import STYLES

    assert CLI_STYLES == STYLES


def test_a_directory_without_requirements_txt_uses_its_pyproject_dependencies(
    tmp_path: Path,
) -> None:
    from fn.cli.functions import _project_dependencies

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "f"\ndependencies = ["httpx>=0.25", "pydantic"]\n')
    assert _project_dependencies(pyproject) == "httpx>=0.25\npydantic\n"
    pyproject.write_text('[project]\nname = "f"\n')
    assert _project_dependencies(pyproject) is None
    pyproject.write_text("[project\n")
    with pytest.raises(SystemExit):
        _project_dependencies(pyproject)


def test_detection_found_by_a_hostile_review(tmp_path: Path) -> None:
    def main_default(params: Any = None) -> Any: ...

    assert classify("main", main_default) == "openwhisk"  # main(params={}) is not Fission's
    lambda_handle = tmp_path / "lambda_handle.py"
    lambda_handle.write_text(
        "def handle(event, context):\n"
        "    return {'id': event['pathParameters']['id'], 'req': context.aws_request_id}\n"
    )
    faas_handle = tmp_path / "faas_handle.py"
    faas_handle.write_text(
        "def handle(event, context):\n    return {'statusCode': 200, 'body': event.body}\n"
    )
    for path, style in ((lambda_handle, "lambda"), (faas_handle, "openfaas")):
        mod = types.ModuleType(path.stem)
        mod.__file__ = str(path)
        exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
        assert detect_style(mod, "handle")[0] == style


def test_an_app_wins_over_the_main_that_runs_it(tmp_path: Path) -> None:
    app = AsgiObject()

    def main() -> None:
        uvicorn.run(app)  # type: ignore[name-defined]  # noqa: F821 (never called)

    def fission_main() -> Any:
        return "reads flask.request"

    found = detect_style(module(main=main, app=app), "handler")
    assert found[:2] == ("asgi", "app")
    assert detect_style(module(main=main), "handler")[:2] == ("fission", "main")
    # Fission's own main() beside a Flask app of its module stays Fission's
    flask_like = FlaskLike()
    assert detect_style(module(main=fission_main, app=flask_like), "handler")[:2] == (
        "fission",
        "main",
    )
    assert classify("hello_gcs", lambda cloudevent: None) == "gcf"


def test_an_app_in_a_packages_init_is_its_main_module(tmp_path: Path) -> None:
    from fn.cli.functions import _target

    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("app = None\n")
    target = _target(tmp_path, None, None, None, "api:app", None)
    assert (target.style, target.entry, target.main) == ("asgi", "app", "api/__init__.py")


def test_names_a_module_imports_come_after_those_it_defines(tmp_path: Path) -> None:
    from invoker.styles.detect import default_entry

    def handle(req: Any) -> Any: ...

    imported = types.ModuleType("util")
    exec("def main(args): ...", imported.__dict__)
    own = module(main=imported.main, handle=handle)
    # OpenFaaS's handler.py with `from .util import main`: handle, by either route
    assert detect_style(own, "handler")[:2] == ("openfaas", "handle")
    assert default_entry(own, "handler", "openfaas") == "handle"
    # a style's own name first (--style openwhisk finds main beside handle), then the rest
    assert default_entry(own, "handler", "openwhisk") == "main"
    assert default_entry(module(main=imported.main), "handler", "openfaas") == "main"


def test_a_route_named_main_is_not_a_fission_function() -> None:
    class Route:
        def __init__(self, endpoint: Any) -> None:
            self.endpoint = endpoint

    class Routed(AsgiObject):
        def __init__(self, *endpoints: Any) -> None:
            self.routes = [Route(e) for e in endpoints]

    async def main() -> Any: ...

    def sync_main() -> Any: ...

    # FastAPI's `@app.get("/") async def main()` beside `app`: the app serves
    assert detect_style(module(main=main, app=Routed()), "handler")[:2] == ("asgi", "app")
    assert detect_style(module(main=sync_main, app=Routed(sync_main)), "handler")[:2] == (
        "asgi",
        "app",
    )
    # Fission's main(), not one of the app's routes, stays Fission's
    assert detect_style(module(main=sync_main, app=Routed()), "handler")[:2] == (
        "fission",
        "main",
    )


PROXY = "    return {'statusCode': 200, 'body': ''}"


@pytest.mark.parametrize(
    ("source", "entry", "expected"),
    [
        ("def lambda_handler(event, context): ...", "handler", "lambda_handler"),
        ("def lambda_handler(event, context): ...", "app.lambda_handler", "app.lambda_handler"),
        ("def hello(event, context):\n    return event['requestContext']", "hello", "hello"),
        ("def handler(event, context):\n" + PROXY, "handler", "handler"),
        ("def handler(event, context):\n    return event", "handler", None),
        # OpenFaaS's python3-http answers with statusCode and body too
        ("def handle(event, context):\n" + PROXY, "handler", None),
        ("def main(args):\n" + PROXY, "handler", None),
        ("def lambda_handler(event, context):\n  return (", "handler", None),  # not Python
    ],
)
def test_a_module_reads_like_lambda_before_it_is_imported(
    tmp_path: Path, source: str, entry: str, expected: str | None
) -> None:
    from invoker.styles.detect import lambda_before_import

    (tmp_path / "app.py").write_text(source)
    assert lambda_before_import(tmp_path / "app.py", entry) == expected


def test_lambdas_environment_before_import_is_taken_back_for_another_style(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_style_lambda import lambda_environment

    lambda_environment.__wrapped__(monkeypatch, tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "the function's own --env")
    (tmp_path / "app.py").write_text("def lambda_handler(event, context): ...\n")
    (tmp_path / "plain.py").write_text("def handler(event, context): ...\n")
    meta = {"function": "orders", "version": 2, "memory_bytes": 256 << 20}
    settle = before_import("auto", "handler", "app.py", str(tmp_path), meta)
    assert os.environ["AWS_REGION"] == "us-east-1"
    assert os.environ["_HANDLER"] == "app.lambda_handler"
    assert os.environ["LAMBDA_TASK_ROOT"] == str(tmp_path)
    assert os.environ["AWS_LAMBDA_FUNCTION_NAME"] == "the function's own --env"
    settle("openwhisk")  # bound with another style after all: nothing of Lambda's stays
    assert "AWS_REGION" not in os.environ
    assert "LAMBDA_TASK_ROOT" not in os.environ
    assert os.environ["AWS_LAMBDA_FUNCTION_NAME"] == "the function's own --env"
    before_import("auto", "handler", "plain.py", str(tmp_path), meta)("ember")
    assert "AWS_REGION" not in os.environ


def test_the_detected_style_is_printed_when_it_is_not_plainly_embers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fn.cli.functions import _print_deployed

    deployed = {"function": "f", "version": 1, "sha256": "ab" * 32, "style_detected": True}
    for style, handler, said in [
        ("lambda", "lambda_handler", "Style: lambda (detected from lambda_handler"),
        ("ember", "hello_background", "Style: ember (detected from hello_background"),
        ("ember", "handler", None),
    ]:
        _print_deployed({**deployed, "style": style, "handler": handler}, "http://x/fn/f")
        out = capsys.readouterr().out
        assert (said in out) if said else ("Style:" not in out), out


def test_what_a_module_sets_at_import_is_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from invoker.styles.aws_lambda import prepare_environment
    from tests.unit.test_style_lambda import info, lambda_environment

    lambda_environment.__wrapped__(monkeypatch, tmp_path)  # type: ignore[attr-defined]
    (tmp_path / "app.py").write_text("def lambda_handler(event, context): ...\n")
    meta = {"function": "orders", "version": 2, "memory_bytes": 256 << 20}
    settle = before_import("lambda", "lambda_handler", "app.py", str(tmp_path), meta)
    os.environ["AWS_REGION"] = "eu-west-3"  # what the module's import code did
    mod = types.ModuleType("app")
    mod.__file__ = str(tmp_path / "app.py")
    facts = prepare_environment(dataclasses.replace(info(), module=mod, version=2))
    assert os.environ["AWS_REGION"] == "eu-west-3"  # not set back at bind
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert facts.version == 2
    settle("ember")
    assert os.environ["AWS_REGION"] == "eu-west-3"  # nor taken back
    assert "AWS_DEFAULT_REGION" not in os.environ
