"""SAM templates' layers, and plain CloudFormation functions and schedules (fn.cli.sam,
fn.cli.sam_layers, fn.cli.sam_events). Pure: files in tmp_path, no platform."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

from fn.cli.stack_deploy import payload
from tests.unit.test_stacks import only, plan_of, reasons, write


def test_sam_layers(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "fn/app.py": "from shared import x\n",
            "fn/requirements.txt": "requests\n",
            "layers/shared/python/shared.py": "x = 1\n",
            "layers/shared/python/app.py": "# shadowed by the function's own app.py\n",
            "layers/deps/requirements.txt": "# pinned\nattrs==23.2.0\n",
            "layers/deps/helpers.py": "",
        },
    )
    plan = plan_of(
        tmp_path,
        """
        Parameters:
          Powertools:
            Type: String
            Default: arn:aws:lambda:eu-west-1:017000801446:layer:AWSLambdaPowertoolsPythonV3:7
        Globals:
          Function:
            Layers: [!Ref Powertools]
        Resources:
          Shared:
            Type: AWS::Serverless::LayerVersion
            Properties: {ContentUri: layers/shared/, CompatibleRuntimes: [python3.12]}
          Deps:
            Type: AWS::Serverless::LayerVersion
            Properties: {ContentUri: layers/deps}
            Metadata: {BuildMethod: python3.12}
          Remote:
            Type: AWS::Serverless::LayerVersion
            Properties: {ContentUri: s3://bucket/layer.zip}
          App:
            Type: AWS::Serverless::Function
            Properties:
              Runtime: python3.12
              CodeUri: fn/
              Handler: app.handler
              Layers:
                - !Ref Shared
                - !Ref Deps
                - !Ref Remote
                - arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-pillow:1
                - arn:aws:lambda:us-east-1:123456789012:layer:private:3
        """,
    )
    app = only(plan, "app")
    assert app.extra == ((tmp_path / "layers/shared/python", ""), (tmp_path / "layers/deps", ""))
    assert app.requirements == ("aws-lambda-powertools", "attrs==23.2.0", "pillow")
    body = payload(app, {}, {})
    assert body["requirements"] == "requests\naws-lambda-powertools\nattrs==23.2.0\npillow\n"
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["archive"])))
    assert sorted(archive.namelist()) == ["app.py", "helpers.py", "requirements.txt", "shared.py"]
    assert archive.read("app.py") == b"from shared import x\n"
    why = reasons(plan)
    assert "not a local directory" in why["App layer !Ref Remote"]
    assert (
        "Ember has no layers"
        in why["App layer arn:aws:lambda:us-east-1:123456789012:layer:private:3"]
    )
    assert "gets its files" in why["Shared (AWS::Serverless::LayerVersion)"]


def test_cloudformation_functions_and_schedule_rules(tmp_path: Path) -> None:
    write(tmp_path, {"worker/main.py": ""})
    plan = plan_of(
        tmp_path,
        """
        Resources:
          Inline:
            Type: AWS::Lambda::Function
            Properties:
              Runtime: python3.12
              Handler: index.handler
              Role: !GetAtt Role.Arn
              TracingConfig: {Mode: Active}
              Code:
                ZipFile: |
                  def handler(event, context):
                      return {"statusCode": 200}
          Worker:
            Type: AWS::Lambda::Function
            Properties: {Runtime: python3.11, Handler: main.run, Code: worker/, Timeout: 60}
          Nightly:
            Type: AWS::Events::Rule
            Properties:
              ScheduleExpression: cron(0 2 * * ? *)
              Targets:
                - {Arn: !GetAtt Worker.Arn, Id: worker}
                - {Arn: !GetAtt Inline.Arn, Id: inline, Input: '{"x": 1}'}
                - {Arn: !Ref Topic, Id: topic}
          Hourly:
            Type: AWS::Scheduler::Schedule
            Properties:
              ScheduleExpression: rate(1 hour)
              ScheduleExpressionTimezone: Europe/Paris
              FlexibleTimeWindow: {Mode: "OFF"}
              Target: {Arn: !GetAtt Worker.Arn, RoleArn: !GetAtt Role.Arn}
          OnUpload:
            Type: AWS::Events::Rule
            Properties:
              EventPattern: {source: [aws.s3]}
              Targets: [{Arn: !GetAtt Worker.Arn, Id: w}]
        """,
    )
    inline = only(plan, "inline")
    assert (inline.code_dir, inline.filename, inline.entry) == (None, "index.py", "handler")
    worker = only(plan, "worker")
    assert (worker.code_dir, worker.filename, worker.settings) == (
        tmp_path / "worker", "main.py", {"timeout": "60s"}
    )  # fmt: skip
    assert [(s.cron, s.timezone) for s in worker.schedules] == [
        ("0 2 * * *", "UTC"),
        ("0 * * * *", "Europe/Paris"),
    ]
    assert [s.cron for s in inline.schedules] == ["0 2 * * *"]
    why = reasons(plan)
    assert "IAM" in why["Inline Role"]
    assert "X-Ray" in why["Inline TracingConfig"]
    assert "fixed Input" in why["Nightly (AWS::Events::Rule) Input"]
    assert "not a function of this template" in why["Nightly (AWS::Events::Rule) target !Ref Topic"]
    assert "event pattern" in why["OnUpload (AWS::Events::Rule)"]
