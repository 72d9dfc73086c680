"""Stack files read into plans (fn.cli.stacks, fn.cli.sam, fn.cli.openfaas_stack): what each
function becomes, and what is listed as not mapped. Pure: files in tmp_path, no platform."""

from __future__ import annotations

import base64
import io
import textwrap
import zipfile
from pathlib import Path

import pytest

from fn.cli.stack_deploy import load_plan, payload
from fn.cli.stacks import Plan, PlannedFunction, StackError, ember_name


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def plan_of(root: Path, resources: str) -> Plan:
    """The plan of a SAM template: SAM_HEAD, then `resources` (indented in the test)."""
    path = root / "template.yaml"
    path.write_text(SAM_HEAD + textwrap.dedent(resources))
    return load_plan(path, {})


def only(plan: Plan, name: str) -> PlannedFunction:
    (found,) = [f for f in plan.functions if f.name == name]
    return found


def reasons(plan: Plan) -> dict[str, str]:
    return {u.what: u.reason for u in plan.not_mapped}


SAM_HEAD = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
"""


def test_sam_init_hello_world(tmp_path: Path) -> None:
    write(tmp_path, {"hello_world/app.py": "def lambda_handler(event, context): ...\n",
                     "hello_world/requirements.txt": "requests\n"})  # fmt: skip
    plan = plan_of(
        tmp_path,
        """
        Globals:
          Function:
            Timeout: 3
            MemorySize: 128
        Resources:
          HelloWorldFunction:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: hello_world/
              Handler: app.lambda_handler
              Runtime: python3.13
              Architectures: [x86_64]
              Events:
                HelloWorld:
                  Type: Api
                  Properties:
                    Path: /hello
                    Method: get
        Outputs:
          HelloWorldApi:
            Value: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.amazonaws.com/Prod/hello/"
        """,
    )
    assert plan.kind == "sam"
    f = only(plan, "helloworldfunction")
    assert (f.origin, f.code_dir, f.filename, f.entry, f.style) == (
        "HelloWorldFunction", tmp_path / "hello_world", "app.py", "lambda_handler", "lambda"
    )  # fmt: skip
    assert f.settings == {"timeout": "3s", "memory": "128Mi"}
    assert f.style_options == {"event": "v1", "routes": "GET /hello"}
    assert [(r.method, r.path) for r in f.routes] == [("GET", "/hello")]
    assert plan.not_mapped == []

    body = payload(f, {"EXTRA": "1"}, {"timeout": "5s"})
    assert body["requirements"] == "requests\n"
    assert (body["filename"], body["entry"], body["timeout"]) == ("app.py", "lambda_handler", "5s")
    assert body["env"] == {"EXTRA": "1"}
    names = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["archive"]))).namelist()
    assert names == ["app.py"]  # requirements.txt goes as the requirements


def test_sam_handlers_in_packages_and_dotted(tmp_path: Path) -> None:
    write(tmp_path, {"src/orders/app.py": "", "src/orders/util.py": "", "lib/pkg/mod.py": ""})
    plan = plan_of(
        tmp_path,
        """
        Globals:
          Function:
            Runtime: python3.12
        Resources:
          Orders:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: src, Handler: orders/app.handler}
          Dotted:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: lib, Handler: pkg.mod.main, FunctionName: My_Dotted.Fn}
          Inline:
            Type: AWS::Serverless::Function
            Properties:
              Handler: index.handler
              InlineCode: |
                def handler(event, context):
                    return "inline"
        """,
    )
    orders = only(plan, "orders")
    assert (orders.filename, orders.entry, orders.code_dir) == (
        "orders/app.py", "handler", tmp_path / "src"
    )  # fmt: skip
    dotted = only(plan, "my_dotted-fn")
    assert (dotted.filename, dotted.entry) == ("pkg/mod.py", "main")
    inline = only(plan, "inline")
    assert (inline.code_dir, inline.filename) == (None, "index.py")
    assert payload(inline, {}, {})["source"].startswith("def handler(event, context):")
    assert "archive" not in payload(inline, {}, {})


def test_sam_functions_not_deployed_say_why(tmp_path: Path) -> None:
    write(tmp_path, {"code/app.py": "", "bundle.zip": "PK"})
    plan = plan_of(
        tmp_path,
        """
        Resources:
          Node:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: code, Handler: app.handler, Runtime: nodejs20.x}
          Image:
            Type: AWS::Serverless::Function
            Properties: {PackageType: Image, ImageUri: repo/image:1}
          InS3:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: s3://bucket/key.zip, Handler: app.h, Runtime: python3.12}
          Zipped:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: bundle.zip, Handler: app.h, Runtime: python3.12}
          Missing:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: nowhere, Handler: app.h, Runtime: python3.12}
          WrongModule:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: code, Handler: main.h, Runtime: python3.12}
          BadHandler:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: code, Handler: app, Runtime: python3.12}
          Plain:
            Type: AWS::Lambda::Function
            Properties: {Handler: app.h, Runtime: python3.12, Code: {S3Bucket: b, S3Key: k}}
        """,
    )
    assert plan.functions == []
    why = reasons(plan)
    assert "Runtime nodejs20.x: Ember runs Python functions" in why["Node"]
    assert "container image" in why["Image"]
    assert "s3://bucket/key.zip is in S3" in why["InS3"]
    assert "is a file; unzip it" in why["Zipped"]
    assert "nowhere: no such directory" in why["Missing"]
    assert "main.py is not in CodeUri code" in why["WrongModule"]
    assert "expected module.function" in why["BadHandler"]
    assert "is in S3" in why["Plain"]


def test_sam_environment_and_intrinsics(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": "", "samconfig.toml": """
        version = 0.1
        [default.deploy.parameters]
        stack_name = "shop"
        parameter_overrides = "Stage=prod Color=\\"dark blue\\""
        """})  # fmt: skip
    plan = plan_of(
        tmp_path,
        """
        Parameters:
          Stage: {Type: String, Default: dev}
          Color: {Type: String}
          Retries: {Type: Number, Default: "3"}
          NoDefault: {Type: String}
        Mappings:
          Sizes:
            prod: {memory: "1024"}
        Conditions:
          IsProd: !Equals [!Ref Stage, prod]
        Globals:
          Function:
            Runtime: python3.12
            Handler: app.handler
            Environment:
              Variables: {SHARED: one, OVERRIDDEN: global}
        Resources:
          Table:
            Type: AWS::DynamoDB::Table
          Api:
            Type: AWS::Serverless::Function
            Properties:
              FunctionName: !Sub "${AWS::StackName}-${Stage}-api"
              MemorySize: !FindInMap [Sizes, !Ref Stage, memory]
              Environment:
                Variables:
                  OVERRIDDEN: own
                  STAGE: !Ref Stage
                  COLOR: !Ref Color
                  RETRIES: !Ref Retries
                  RATIO: 0.10
                  FLAG: yes
                  MODE: !If [IsProd, fast, safe]
                  OPTIONAL: !If [IsProd, !Ref AWS::NoValue, set]
                  JOINED: !Join ["-", [a, !Ref Stage, !Select [1, [x, y]]]]
                  LITERAL: !Sub "${!NotAVariable}"
                  TABLE: !Ref Table
                  ARN: !GetAtt Table.Arn
                  MISSING: !Ref NoDefault
                  ACCOUNT: !Ref AWS::AccountId
        """,
    )
    f = only(plan, "shop-prod-api")
    assert f.env == {
        "SHARED": "one",
        "OVERRIDDEN": "own",
        "STAGE": "prod",
        "COLOR": "dark blue",
        "RETRIES": "3",
        "RATIO": "0.10",
        "FLAG": "yes",
        "MODE": "fast",
        "JOINED": "a-prod-y",
        "LITERAL": "${NotAVariable}",
    }
    assert f.settings == {"memory": "1024Mi"}
    why = reasons(plan)
    assert "an AWS resource (AWS::DynamoDB::Table)" in why["Api env TABLE"]
    assert "--env TABLE=VALUE" in why["Api env TABLE"]
    assert "!GetAtt Table.Arn" in why["Api env ARN"]
    assert "a parameter without a Default" in why["Api env MISSING"]
    assert "AWS::AccountId" in why["Api env ACCOUNT"]
    assert "Table (AWS::DynamoDB::Table)" in why


def test_sam_events(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": ""})
    plan = plan_of(
        tmp_path,
        """
        Globals:
          Function: {Runtime: python3.12, Handler: app.handler, Tracing: Active}
          Api: {Cors: "'*'"}
        Resources:
          Clock:
            Type: AWS::Serverless::Function
            Properties:
              Events:
                Every5:
                  Type: Schedule
                  Properties: {Schedule: rate(5 minutes), Input: '{"k": 1}'}
                Weekdays:
                  Type: ScheduleV2
                  Properties:
                    ScheduleExpression: cron(0 18 ? * MON-FRI *)
                    ScheduleExpressionTimezone: Europe/Paris
                Off:
                  Type: Schedule
                  Properties: {Schedule: rate(1 hour), Enabled: false}
                Odd:
                  Type: Schedule
                  Properties: {Schedule: rate(45 minutes)}
                Queue:
                  Type: SQS
                  Properties: {Queue: !GetAtt Q.Arn}
                Stream:
                  Type: DynamoDB
                  Properties: {Stream: !GetAtt T.StreamArn}
                Hello:
                  Type: HttpApi
                  Properties: {Path: "/hello/{name}", Method: GET, Auth: {Authorizer: X}}
                Legacy:
                  Type: Api
                  Properties: {Path: /legacy, Method: post}
          Catchall:
            Type: AWS::Serverless::Function
            Properties:
              Events:
                All:
                  Type: HttpApi
                  Properties: {PayloadFormatVersion: "1.0"}
          Url:
            Type: AWS::Serverless::Function
            Properties:
              FunctionUrlConfig: {AuthType: AWS_IAM, Cors: {AllowOrigins: ["*"]}}
        """,
    )
    clock = only(plan, "clock")
    assert [(s.cron, s.timezone) for s in clock.schedules] == [
        ("*/5 * * * *", "UTC"),
        ("0 18 * * MON-FRI", "Europe/Paris"),
    ]
    assert clock.schedules[0].origin == "Schedule Every5: rate(5 minutes)"
    assert [(r.method, r.path) for r in clock.routes] == [
        ("GET", "/hello/{name}"),
        ("POST", "/legacy"),
    ]
    assert clock.style_options == {"event": "v2", "routes": "GET /hello/{name};POST /legacy"}
    catchall = only(plan, "catchall")
    assert catchall.style_options == {"event": "v1"}
    assert [(r.method, r.path) for r in catchall.routes] == [("ANY", "")]
    url = only(plan, "url")
    assert url.style_options == {"event": "url"}
    why = reasons(plan)
    assert (
        "Ember's schedule event, not this fixed Input" in why["Clock event Every5 (Schedule) Input"]
    )
    assert "disabled" in why["Clock event Off (Schedule)"]
    assert "rate(45 minutes) has no cron equivalent" in why["Clock event Odd (Schedule)"]
    assert "no SQS queue source" in why["Clock event Queue (SQS)"]
    assert "fn trigger add clock --topic T" in why["Clock event Queue (SQS)"]
    assert "Postgres tables" in why["Clock event Stream (DynamoDB)"]
    assert "authorizer" in why["Clock event Hello (HttpApi) Auth"]
    assert "one event shape: v2, for HttpApi Hello" in why["Clock Api Legacy"]
    assert "IAM signature" in why["Url FunctionUrlConfig AuthType AWS_IAM"]
    assert "CORS" in why["Url FunctionUrlConfig Cors"]
    assert "X-Ray" in why["Globals.Function.Tracing"]
    assert "Globals.Api" in why


def test_sam_settings_policy_conditions_and_leftovers(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": ""})
    plan = plan_of(
        tmp_path,
        """
        Parameters:
          Env: {Type: String, Default: dev}
        Conditions:
          IsProd: !Equals [!Ref Env, prod]
        Globals:
          Function: {Runtime: python3.12, Handler: app.handler}
        Resources:
          Worker:
            Type: AWS::Serverless::Function
            Properties:
              Timeout: 900
              MemorySize: 10240
              ReservedConcurrentExecutions: 5
              ProvisionedConcurrencyConfig: {ProvisionedConcurrentExecutions: 2}
              EventInvokeConfig:
                MaximumRetryAttempts: 0
                MaximumEventAgeInSeconds: 120
                DestinationConfig: {OnFailure: {Type: SQS, Destination: !GetAtt Q.Arn}}
              Layers: [!Ref Deps]
              Policies: [AWSLambdaBasicExecutionRole]
              SomethingNew: 1
          ProdOnly:
            Type: AWS::Serverless::Function
            Condition: IsProd
            Properties: {}
          Twin:
            Type: AWS::Serverless::Function
            Properties: {FunctionName: worker}
        """,
    )
    worker = only(plan, "worker")
    assert worker.settings == {
        "memory": "10240Mi",
        "timeout": "900s",
        "max_attempts": "1",
        "max_event_age": "120s",
    }
    assert worker.policy == {"max_instances": 5, "min_warm": 2}
    assert [f.name for f in plan.functions] == ["worker"]
    why = reasons(plan)
    assert "Ember has no layers" in why["Worker layer !Ref Deps"]
    assert "IAM" in why["Worker Policies"]
    assert why["Worker SomethingNew"] == "no Ember equivalent"
    assert "dead letters" in why["Worker EventInvokeConfig.DestinationConfig"]
    assert "condition IsProd is false" in why["ProdOnly"]
    assert "its name worker is Worker's too" in why["Twin"]


def test_names_follow_embers_rules() -> None:
    assert ember_name("HelloWorldFunction") == "helloworldfunction"
    assert ember_name("my.fn name") == "my-fn-name"
    assert ember_name("123abc") == "abc"
    assert ember_name("x" * 80) == "x" * 63
    assert ember_name("---") == "function"


def test_files_that_are_not_stack_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "config.yaml"
    other.write_text("name: x\nitems: [1, 2]\n")
    with pytest.raises(StackError, match=r"neither an AWS SAM template .* nor an OpenFaaS stack"):
        load_plan(other, {})
    broken = tmp_path / "broken.yml"
    broken.write_text("functions:\n  a: [\n")
    with pytest.raises(StackError, match=r"broken.yml is not valid YAML, line \d"):
        load_plan(broken, {})
    json_template = tmp_path / "template.json"
    json_template.write_text(
        '{"Transform": "AWS::Serverless-2016-10-31", "Resources": {"F": {"Type": '
        '"AWS::Serverless::Function", "Properties": {"Runtime": "go1.x"}}}}'
    )
    plan = load_plan(json_template, {})
    assert (plan.kind, plan.functions) == ("sam", [])
    assert "Runtime go1.x" in reasons(plan)["F"]


def test_a_templates_code_outside_its_directory_is_not_deployed(tmp_path: Path) -> None:
    write(tmp_path, {"private/id_rsa": "key", "project/src/app.py": "def handler(e, c): ...\n"})
    plan = plan_of(
        tmp_path / "project",
        """
        Resources:
          Innocent:
            Type: AWS::Serverless::Function
            Properties:
              Runtime: python3.12
              CodeUri: ../
              Handler: project/src/app.handler
        """,
    )
    assert plan.functions == []
    assert "outside the template's directory" in reasons(plan)["Innocent"]


INTEGRATION = (
    "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${%s.Arn}/invocations"
)


def test_sam_routes_of_an_apis_openapi_definition(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": ""})
    plan = plan_of(
        tmp_path,
        """
        Resources:
          AppFunction:
            Type: AWS::Serverless::Function
            Properties:
              Handler: app.lambda_handler
              Runtime: python3.12
              Events:
                Root:
                  Type: Api
                  Properties: {Path: /hello, Method: post, RestApiId: !Ref Gw}
          AppFunction2:
            Type: AWS::Serverless::Function
            Properties: {Handler: app.lambda_handler, Runtime: python3.12}
          Gw:
            Type: AWS::Serverless::Api
            Properties:
              StageName: dev
              DefinitionBody:
                openapi: "3.0.1"
                paths:
                  "/{proxy+}":
                    x-amazon-apigateway-any-method:
                      x-amazon-apigateway-integration:
                        uri: !Sub URI_OF(AppFunction)
                        httpMethod: POST
                        type: aws_proxy
                  /other:
                    get:
                      x-amazon-apigateway-integration:
                        uri: !Sub "URI_OF(AppFunction2)"
                        type: aws_proxy
                    parameters: []
          Http:
            Type: AWS::Serverless::HttpApi
            Properties:
              DefinitionBody:
                paths:
                  /v2/items:
                    post:
                      x-amazon-apigateway-integration:
                        uri: {"Fn::GetAtt": [AppFunction2, Arn]}
                        payloadFormatVersion: "2.0"
        """.replace("URI_OF(AppFunction)", INTEGRATION % "AppFunction").replace(
            "URI_OF(AppFunction2)", INTEGRATION % "AppFunction2"
        ),
    )
    first = only(plan, "appfunction")
    assert [(r.method, r.path) for r in first.routes] == [("POST", "/hello"), ("ANY", "/{proxy+}")]
    assert first.style_options == {"event": "v1", "routes": "POST /hello;ANY /{proxy+}"}
    second = only(plan, "appfunction2")  # (AppFunction's name is a prefix of it: not its routes)
    assert [(r.method, r.path) for r in second.routes] == [("GET", "/other"), ("POST", "/v2/items")]
    assert second.style_options["event"] == "v1"
    assert (
        "one event shape: v1, for Gw DefinitionBody /other"
        in reasons(plan)["AppFunction2 Http DefinitionBody /v2/items"]
    )
