"""`fn deploy` of an AWS SAM template and of an OpenFaaS stack file, as a subprocess against
`fn up`: the functions deployed and called over HTTP, their schedules added as triggers once
however often the file is deployed, and what has no Ember equivalent listed.

The SAM and OpenFaaS examples (examples/migrating/) need the lambda and openfaas styles; their
tests run once invoker/styles/aws_lambda.py and openfaas.py exist."""

from __future__ import annotations

import json
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_cli import ROOT, Cli, fn_up

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(240)]

SAM = ROOT / "examples/migrating/sam/template.yaml"
OPENFAAS = ROOT / "examples/migrating/openfaas-stack/stack.yml"


@pytest.fixture(scope="module")
def ember(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with fn_up(tmp_path_factory.mktemp("stacks") / "state") as running:
        yield running


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def crons(cli: Cli, name: str) -> list[tuple[str, str]]:
    triggers = json.loads(cli.ok("trigger", "list", name, "--json"))["triggers"]
    return [(t["cron"], t["timezone"]) for t in triggers]


def test_stack_file_of_ember_style_handlers(ember: Cli, tmp_path: Path) -> None:
    """Runs before the lambda and openfaas styles exist: a Python lang Ember does not know is
    deployed with the style detected from handler.py (here Ember's own)."""
    (tmp_path / "greet").mkdir()
    (tmp_path / "greet/handler.py").write_text(
        textwrap.dedent("""\
            import os
            from .words import hello

            def handler(event, context):
                return {"message": hello(event.get("name", "world")), "mode": os.environ["MODE"],
                        "from_file": os.environ["FROM_FILE"]}
            """)
    )
    (tmp_path / "greet/words.py").write_text("def hello(name):\n    return f'Hello, {name}!'\n")
    (tmp_path / "env.yml").write_text("environment:\n  FROM_FILE: yes\n")
    stack = tmp_path / "stack.yml"
    stack.write_text(
        textwrap.dedent("""\
            provider: {name: openfaas, gateway: http://127.0.0.1:8080}
            functions:
              stack-greet:
                lang: python3-custom
                handler: ./greet
                image: me/greet:${TAG:-latest}
                environment: {MODE: ember}
                environment_file: [env.yml]
                annotations: {topic: cron-function, schedule: "*/10 * * * *"}
                secrets: [api-key]
              nodeinfo:
                image: ghcr.io/openfaas/nodeinfo:latest
            """)
    )
    out = ember.ok("deploy", str(stack))
    assert out.splitlines()[0].startswith("Deployed stack-greet version 1 (sha256 ")
    assert out.splitlines()[0].endswith(", style ember.")
    assert "Not mapped:" in out
    assert "  - stack-greet secret api-key: Ember has no secrets yet" in out
    assert "  - nodeinfo: not deployed: an image-only function" in out

    report = json.loads(ember.ok("deploy", str(stack), "--json"))
    (greet,) = report["functions"]
    assert (greet["name"], greet["version"], greet["style"]) == ("stack-greet", 2, "ember")
    assert [(t["cron"], t["status"]) for t in report["triggers"]] == [("*/10 * * * *", "exists")]
    assert crons(ember, "stack-greet") == [("*/10 * * * *", "UTC")]  # one, not two
    assert call(greet["url"], {"name": "Ada"}) == (
        200,
        {"message": "Hello, Ada!", "mode": "ember", "from_file": "yes"},
    )

    other = tmp_path / "values.yaml"
    other.write_text("replicas: 3\n")
    refused = ember.run("deploy", str(other))
    assert refused.returncode == 1
    assert "neither an AWS SAM template" in refused.stderr
    nothing = tmp_path / "template.yaml"
    nothing.write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Js:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties: {Runtime: nodejs20.x, Handler: index.handler, CodeUri: .}\n"
    )
    none = ember.run("deploy", str(nothing))
    assert none.returncode == 1
    assert "  - Js: not deployed: Runtime nodejs20.x: Ember runs Python functions" in none.stdout
    assert "nothing in" in none.stderr


def test_sam_template(ember: Cli) -> None:
    report = json.loads(ember.ok("deploy", str(SAM), "--json"))
    functions = {f["name"]: f for f in report["functions"]}
    assert {n: (f["from"], f["style"]) for n, f in functions.items()} == {
        "sam-example": ("GreeterFunction", "lambda"),
        "sam-example-clock": ("ClockFunction", "lambda"),
    }
    assert functions["sam-example"]["style_options"]["event"] == "v1"
    assert functions["sam-example-clock"]["style_options"]["event"] == "v2"
    not_mapped = {i["what"]: i["reason"] for i in report["not_mapped"]}
    assert "no SQS queue source" in not_mapped["ClockFunction event Orders (SQS)"]
    assert "--env TICKS_TABLE=VALUE" in not_mapped["ClockFunction env TICKS_TABLE"]

    # a package directory with a relative import, a v1 event, GREETING from Globals
    greet = functions["sam-example"]["url"] + "/greet?name=Ada&shout=1"
    assert call(greet) == (200, {"message": "HELLO, ADA!"})
    # a schedule and an HTTP API route on the same function
    now = functions["sam-example-clock"]["url"] + "/now"
    assert call(now)[1]["method"] == "GET"
    assert crons(ember, "sam-example-clock") == [("*/5 * * * *", "UTC")]

    again = json.loads(ember.ok("deploy", str(SAM), "--json"))
    assert [t["status"] for t in again["triggers"]] == ["exists"]
    assert crons(ember, "sam-example-clock") == [("*/5 * * * *", "UTC")]


def test_sam_path_parameters(ember: Cli, tmp_path: Path) -> None:
    (tmp_path / "items").mkdir()
    (tmp_path / "items/app.py").write_text(
        "import json\n\ndef handler(event, context):\n"
        "    return {'statusCode': 200, 'body': json.dumps(event['pathParameters'])}\n"
    )
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent("""\
            Transform: AWS::Serverless-2016-10-31
            Resources:
              Items:
                Type: AWS::Serverless::Function
                Properties:
                  Runtime: python3.12
                  CodeUri: items/
                  Handler: app.handler
                  Events:
                    One: {Type: Api, Properties: {Path: "/items/{id}", Method: get}}
                    Files: {Type: Api, Properties: {Path: "/files/{path+}", Method: any}}
            """)
    )
    report = json.loads(ember.ok("deploy", str(template), "--json"))
    url = report["functions"][0]["url"]
    assert call(url + "/items/42") == (200, {"id": "42"})
    assert call(url + "/files/a/b.txt") == (200, {"path": "a/b.txt"})


def test_openfaas_stack(ember: Cli) -> None:
    out = ember.ok("deploy", str(OPENFAAS))
    assert out.splitlines()[0].startswith("Deployed openfaas-stack-example version ")
    assert "style openfaas" in out.splitlines()[0]
    assert "  - nodeinfo: not deployed: an image-only function" in out
    report = json.loads(ember.ok("deploy", str(OPENFAAS), "--json"))
    (hello,) = report["functions"]
    assert call(hello["url"] + "?name=Ada") == (200, {"message": "Hello, Ada!"})
    assert call(hello["url"], {"name": "Bo"}) == (200, {"message": "Hello, Bo!"})
    assert crons(ember, "openfaas-stack-example") == [("*/5 * * * *", "UTC")]
