"""`fn deploy STACKFILE` against a fake of the admin API (fn.cli.stack_deploy): the requests it
makes, schedules added once however often the file is deployed, the report, the exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fn.cli import cli
from fn.client import ClientError
from tests.unit.test_stacks import write

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Globals:
  Function: {Runtime: python3.12, Timeout: 5}
Resources:
  Clock:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: clock/
      Handler: app.lambda_handler
      ReservedConcurrentExecutions: 3
      Events:
        Tick: {Type: Schedule, Properties: {Schedule: rate(5 minutes)}}
        Now: {Type: HttpApi, Properties: {Path: /now, Method: get}}
        Queue: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn}}
  Broken:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: broken/, Handler: app.handler}
  Node:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: clock/, Handler: app.handler, Runtime: nodejs20.x}
"""


class FakeApi:
    """The admin API as far as stack deploys use it; `refuse` names functions whose deploy
    the gateway refuses."""

    url = "http://ember.test"

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, str, Any]] = []
        self.versions: dict[str, int] = {}
        self.triggers: list[dict[str, Any]] = []

    def api(self, method: str, path: str, payload: Any = None) -> Any:
        self.calls.append((method, path, payload))
        if (method, path) == ("POST", "/v1/functions"):
            if payload["name"] in self.refuse:
                raise ClientError("app.py, line 1: invalid syntax", 400, {"error": {}})
            version = self.versions[payload["name"]] = self.versions.get(payload["name"], 0) + 1
            return {
                "function": payload["name"],
                "version": version,
                "sha256": "ab" * 32,
                "style": payload["style"],
                "style_options": payload.get("style_options", {}),
            }
        if method == "GET" and path.startswith("/v1/triggers?function="):
            name = path.split("=", 1)[1]
            return {"triggers": [t for t in self.triggers if t["function"] == name]}
        if method == "POST" and path.endswith("/triggers"):
            name = path.split("/")[3]
            trigger = {"id": len(self.triggers) + 1, "function": name, "kind": "cron", **payload}
            self.triggers.append(trigger)
            return trigger
        if method == "PUT" and path.endswith("/policy"):
            return payload
        raise AssertionError(f"unexpected call {method} {path}")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi(refuse=("broken",))
    monkeypatch.setattr("fn.cli.stack_deploy.client", lambda ctx: api)
    return api


def project(tmp_path: Path) -> Path:
    write(
        tmp_path,
        {
            "clock/app.py": "def lambda_handler(event, context): ...\n",
            "broken/app.py": "def handler(event, context): ...\n",
        },
    )
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


def test_deploys_each_function_once_adds_schedules_once_and_lists_the_rest(
    tmp_path: Path, fake: FakeApi
) -> None:
    path = project(tmp_path)
    runner = CliRunner()
    first = runner.invoke(cli, ["deploy", str(path), "--env", "K=v", "--memory", "512Mi"])
    assert first.exit_code == 1, first.output  # Broken was refused
    lines = first.stdout.splitlines()
    assert lines[0] == "Deployed clock version 1 (sha256 abababababab), style lambda, from Clock."
    assert lines[1] == "  GET /now (HttpApi Now): http://ember.test/fn/clock/now"
    assert lines[2] == "  Policy: max-instances 3"
    assert 'Added trigger 1: clock runs on cron "*/5 * * * *" UTC' in first.stdout
    assert "Not mapped:\n  - Clock event Queue (SQS): Ember has no SQS queue source" in first.stdout
    assert "  - Node: not deployed: Runtime nodejs20.x" in first.stdout
    assert "fn: Broken (broken): not deployed: app.py, line 1: invalid syntax" in first.stderr
    (deploy, *_) = [p for m, path_, p in fake.calls if path_ == "/v1/functions"]
    assert (deploy["env"], deploy["memory"], deploy["timeout"]) == ({"K": "v"}, "512Mi", "5s")
    assert deploy["style_options"] == {"event": "v2", "routes": "GET /now"}
    assert ("PUT", "/v1/functions/clock/policy", {"max_instances": 3}) in fake.calls

    fake.refuse = ()
    again = runner.invoke(cli, ["deploy", str(path), "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert [(f["name"], f["version"]) for f in report["functions"]] == [
        ("clock", 2),
        ("broken", 1),
    ]
    assert [(t["id"], t["status"]) for t in report["triggers"]] == [(1, "exists")]
    assert len(fake.triggers) == 1  # no second trigger for the same schedule
    assert {"what": "Clock event Queue (SQS)"}.items() <= report["not_mapped"][0].items()

    fake.triggers.append({"id": 9, "function": "clock", "kind": "cron", "cron": "0 * * * *",
                          "timezone": "UTC"})  # fmt: skip
    third = runner.invoke(cli, ["deploy", str(path)])
    assert 'Trigger 9 of clock (cron "0 * * * *" UTC) is not in the file: kept' in third.stdout
    assert "fn trigger delete 9" in third.stdout


def test_options_a_stack_file_sets_itself_are_refused(tmp_path: Path, fake: FakeApi) -> None:
    result = CliRunner().invoke(
        cli, ["deploy", str(project(tmp_path)), "--name", "x", "--style", "lambda"]
    )
    assert result.exit_code == 1
    assert "--name, --style cannot be given with a stack file" in result.stderr
    assert fake.calls == []


def test_nothing_deployable_exits_non_zero(tmp_path: Path, fake: FakeApi) -> None:
    path = tmp_path / "stack.yml"
    path.write_text("provider: {name: openfaas}\nfunctions:\n  a: {image: x/y}\n")
    result = CliRunner().invoke(cli, ["deploy", str(path)])
    assert result.exit_code == 1
    assert "  - a: not deployed: an image-only function" in result.stdout
    assert "nothing in" in result.stderr
    assert "(OpenFaaS stack file: 0 Python function(s) found" in result.stderr
    assert fake.calls == []

    other = tmp_path / "values.yaml"
    other.write_text("replicas: 3\n")
    result = CliRunner().invoke(cli, ["deploy", str(other)])
    assert result.exit_code == 1
    assert "is neither an AWS SAM template" in result.stderr


def test_the_gateway_takes_the_routes_of_a_sam_template_as_a_lambda_style_option() -> None:
    from config.units import ConfigError
    from gateway.units import parse_function_config

    routes = "GET /items/{id};ANY /{proxy+}"
    config = parse_function_config({"style": "lambda", "style_options": {"routes": routes}})
    assert config.style_options == {"routes": routes}
    with pytest.raises(ConfigError, match="style option routes"):
        parse_function_config({"style": "lambda", "style_options": {"routes": "x" * 5000}})
    with pytest.raises(ConfigError, match="one of v2, v1, alb, url"):
        parse_function_config({"style": "lambda", "style_options": {"event": "v3"}})
