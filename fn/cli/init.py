"""`fn init NAME [--style STYLE]`: a new function's folder, ready to deploy and to test: the
handler (in Ember's own style, or in the style of the platform it is written for), a test
that calls it as the platform would (pytest, nothing to install), and a requirements file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from fn.cli.output import fail


@dataclass(frozen=True, slots=True)
class Template:
    main: str
    """The handler's file: what `fn deploy DIR` looks for first."""
    handler: str
    test: str


EMBER = Template(
    "handler.py",
    '''"""{name}: an Ember function. Deploy it with: fn deploy {name}/"""


def handler(event, context):
    """`event` is the JSON body (or the raw bytes); the return value is the JSON answer."""
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    context.logger.info("greeting %s", name)
    return {{"hello": name}}
''',
    """import logging
from types import SimpleNamespace

from handler import handler


def test_handler_greets() -> None:
    context = SimpleNamespace(logger=logging.getLogger("test"))
    assert handler({{"name": "Ada"}}, context) == {{"hello": "Ada"}}
    assert handler({{}}, context) == {{"hello": "world"}}
""",
)
LAMBDA = Template(
    "lambda_function.py",
    '''"""{name}: an AWS Lambda handler (API Gateway HTTP API events), unchanged on Ember."""

import json


def lambda_handler(event, context):
    params = event.get("queryStringParameters") or {{}}
    name = params.get("name", "world")
    return {{"statusCode": 200, "body": json.dumps({{"hello": name}})}}
''',
    """import json

from lambda_function import lambda_handler


def test_lambda_handler_greets() -> None:
    response = lambda_handler({{"queryStringParameters": {{"name": "Ada"}}}}, None)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {{"hello": "Ada"}}
""",
)
OPENWHISK = Template(
    "handler.py",
    '''"""{name}: an OpenWhisk action (a web action's main(args)), unchanged on Ember."""


def main(args):
    return {{"hello": args.get("name", "world")}}
''',
    """from handler import main


def test_main_greets() -> None:
    assert main({{"name": "Ada"}}) == {{"hello": "Ada"}}
""",
)
OPENFAAS = Template(
    "handler.py",
    '''"""{name}: an OpenFaaS python3-http function, unchanged on Ember."""

import json


def handle(event, context):
    body = json.loads(event.body or b"{{}}")
    return {{"statusCode": 200, "body": {{"hello": body.get("name", "world")}}}}
''',
    """from types import SimpleNamespace

from handler import handle


def test_handle_greets() -> None:
    event = SimpleNamespace(body=b'{{"name": "Ada"}}')
    assert handle(event, None) == {{"statusCode": 200, "body": {{"hello": "Ada"}}}}
""",
)
ASGI = Template(
    "main.py",
    '''"""{name}: an ASGI app (no framework needed; FastAPI or Starlette work the same way)."""

import json


async def app(scope, receive, send):
    body = json.dumps({{"hello": "world", "path": scope["path"]}}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": body}})
''',
    """import asyncio
import json

from main import app


def test_app_answers() -> None:
    sent = []

    async def receive():
        return {{"type": "http.request", "body": b"", "more_body": False}}

    async def send(message):
        sent.append(message)

    asyncio.run(app({{"type": "http", "path": "/a", "method": "GET"}}, receive, send))
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {{"hello": "world", "path": "/a"}}
""",
)
WSGI = Template(
    "app.py",
    '''"""{name}: a WSGI app (no framework needed; Flask or Django work the same way)."""

import json


def app(environ, start_response):
    body = json.dumps({{"hello": "world", "path": environ["PATH_INFO"]}}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
''',
    """import json

from app import app


def test_app_answers() -> None:
    statuses = []
    body = b"".join(app({{"PATH_INFO": "/a"}}, lambda s, h: statuses.append(s)))
    assert statuses == ["200 OK"]
    assert json.loads(body) == {{"hello": "world", "path": "/a"}}
""",
)
GCF = Template(
    "main.py",
    '''"""{name}: a Google Cloud Functions HTTP function (a Flask request in, a dict out),
unchanged on Ember (which installs Flask for it, as Cloud Functions provides it)."""


def hello(request):
    data = request.get_json(silent=True) or {{}}
    return {{"hello": data.get("name") or request.args.get("name", "world")}}
''',
    """from types import SimpleNamespace

from main import hello


def test_hello_greets() -> None:
    request = SimpleNamespace(get_json=lambda silent=False: {{"name": "Ada"}}, args={{}})
    assert hello(request) == {{"hello": "Ada"}}
    request = SimpleNamespace(get_json=lambda silent=False: None, args={{"name": "Bo"}})
    assert hello(request) == {{"hello": "Bo"}}
""",
)
TEMPLATES = {
    "ember": EMBER,
    "lambda": LAMBDA,
    "openwhisk": OPENWHISK,
    "openfaas": OPENFAAS,
    "asgi": ASGI,
    "wsgi": WSGI,
    "gcf": GCF,
}
"""(Fission's and Knative's templates need their frameworks even to be tested: not offered.)"""
DEPLOY_FLAGS = {"asgi": " --asgi main:app", "wsgi": " --wsgi app:app", "gcf": " --style gcf"}


@click.command()
@click.argument("name")
@click.option(
    "--style",
    type=click.Choice(sorted(TEMPLATES)),
    default="ember",
    show_default=True,
    help="The handler's style: Ember's own, or the platform it is written for.",
)
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    help="Where to create the NAME folder (default: here).",
)
def init(name: str, style: str, parent: Path) -> None:
    """Create folder NAME with a handler, its test and a requirements file."""
    import re

    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", name):
        fail(
            f"invalid function name {name!r}: use 1-63 lowercase letters, digits, - and _, "
            "starting with a letter"
        )
    folder = parent / name
    if folder.exists() and any(folder.iterdir()):
        fail(f"{folder} exists and is not empty: pick another name, or remove it first")
    template = TEMPLATES[style]
    folder.mkdir(parents=True, exist_ok=True)
    main = template.main.removesuffix(".py")
    (folder / template.main).write_text(template.handler.format(name=name))
    (folder / f"test_{main}.py").write_text(template.test.format(name=name))
    (folder / "requirements.txt").write_text(
        "# The packages the handler imports, one a line (pip's format), like: requests==2.32.3\n"
    )
    click.echo(
        f"Created {folder}/ ({style} style): {template.main}, test_{main}.py, requirements.txt."
    )
    click.echo(f"Test it:   cd {folder} && python -m pytest -q")
    click.echo(f"Deploy it: fn deploy {folder}/{DEPLOY_FLAGS.get(style, '')}")
