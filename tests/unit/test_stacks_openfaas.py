"""OpenFaaS stack files read into plans (fn.cli.openfaas_stack): what each function becomes,
and what is listed as not mapped. Pure: files in tmp_path, no platform."""

from __future__ import annotations

import base64
import io
import textwrap
import zipfile
from pathlib import Path

from fn.cli.openfaas_stack import substitute
from fn.cli.stack_deploy import load_plan, payload
from tests.unit.test_stacks import only, reasons, write


def test_openfaas_stack(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "hello/handler.py": "def handle(event, context): ...\n",
            "hello/requirements.txt": "requests\n",
            "hello/helpers.py": "",
            "classic/handler.py": "def handle(req): ...\n",
            "custom/handler.py": "def handler(event, context): ...\n",
            "nohandler/other.py": "",
            "common/shared.py": "",
            "env/base.yml": "environment: {FROM_FILE: one, BOTH: file1}\n",
            "env/over.yml": "environment: {BOTH: file2}\n",
        },
    )
    path = tmp_path / "stack.yml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1.0
            provider: {name: openfaas, gateway: http://127.0.0.1:8080}
            configuration:
              templates:
                - name: python3-http
                  source: https://github.com/openfaas/python-flask-template
              copy: [common]
            functions:
              hello:
                lang: python3-http
                handler: ./hello
                image: ${REGISTRY:-docker.io/me}/hello:${TAG}
                environment: {INLINE: x, BOTH: inline, exec_timeout: 1m30s, write_debug: true}
                environment_file: [env/base.yml, env/over.yml, env/missing.yml]
                limits: {memory: 40m, cpu: 250m}
                requests: {memory: 20Mi}
                annotations:
                  topic: cron-function,payments
                  schedule: "@every 15m"
                  com.openfaas.health.http.path: /healthz
                labels: {com.openfaas.scale.min: "1", com.openfaas.scale.max: "4", team: x}
                secrets: [api-key]
                build_options: [ca-certificates]
              classic:
                lang: python3-flask
                handler: ./classic
                image: classic
                annotations: {schedule: "0 * * * *"}
              custom:
                lang: python3-fastish
                handler: ./custom
                image: custom
              node:
                lang: node18
                handler: ./node
                image: node
              image-only:
                image: functions/nodeinfo
                skip_build: true
              broken:
                lang: python3-http
                handler: ./nohandler
                image: broken
            """
        )
    )
    plan = load_plan(path, {"TAG": "1.0"})
    assert plan.kind == "openfaas"
    hello = only(plan, "hello")
    assert (hello.style, hello.entry, hello.filename, hello.prefix) == (
        "openfaas", "handle", "function/handler.py", "function/"
    )  # fmt: skip
    assert hello.env == {
        "INLINE": "x",
        "BOTH": "file2",
        "FROM_FILE": "one",
        "exec_timeout": "1m30s",
        "write_debug": "true",
    }
    assert hello.settings == {"timeout": "90s", "memory": "40M", "cpus": "0.25"}
    assert hello.policy == {"min_warm": 1, "max_instances": 4}
    assert [(s.cron, s.timezone) for s in hello.schedules] == [("*/15 * * * *", "UTC")]
    body = payload(hello, {}, {})
    assert body["requirements"] == "requests\n"
    files = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["archive"]))).namelist()
    assert files == ["function/handler.py", "function/helpers.py", "function/common/shared.py"]
    assert body["source"] == "def handle(event, context): ...\n"

    classic = only(plan, "classic")
    assert (classic.style, classic.entry, classic.schedules) == ("openfaas", "handle", ())
    custom = only(plan, "custom")
    assert (custom.style, custom.entry) == ("auto", None)
    assert [f.name for f in plan.functions] == ["hello", "classic", "custom"]
    why = reasons(plan)
    assert "Ember has no secrets yet" in why["hello secret api-key"]
    assert "fn trigger add hello --topic payments" in why["hello topic payments"]
    assert why["hello annotation com.openfaas.health.http.path"] == "no Ember equivalent"
    assert why["hello label team"] == "Ember has no labels"
    assert "system packages" in why["hello build_options"]
    assert "not read" in why["hello environment_file env/missing.yml"]
    assert "cron-connector ignores it" in why["classic schedule annotation"]
    assert "detected from handler.py" in why["custom lang python3-fastish"]
    assert "lang node18: Ember runs Python functions only" in why["node"]
    assert "image-only" in why["image-only"]
    assert "has no handler.py" in why["broken"]
    assert "configuration.templates (python3-http)" in why


def test_variables_are_substituted_as_faas_cli_does() -> None:
    environ = {"SET": "s", "EMPTY": ""}
    text = "${SET} ${UNSET} ${EMPTY:-d1} ${EMPTY-d2} ${UNSET-d3} ${SET:-d4} $SET"
    assert substitute(text, environ) == "s  d1  d3 s $SET"


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    write(tmp_path, {"a/handler.py": "", "b/handler.py": ""})
    path = tmp_path / "stack.yml"
    path.write_text(
        textwrap.dedent("""\
            provider: {name: openfaas}
            x-defaults: &defaults
              lang: python3-http
              environment: {LEVEL: info, RETRIES: 03}
            functions:
              a: {<<: *defaults, handler: ./a}
              b:
                <<: *defaults
                handler: ./b
                environment: {LEVEL: debug}
            """)
    )
    plan = load_plan(path, {})
    assert only(plan, "a").env == {"LEVEL": "info", "RETRIES": "03"}
    assert only(plan, "b").env == {"LEVEL": "debug"}
    assert only(plan, "b").style == "openfaas"


def test_files_outside_the_stack_files_directory_are_not_deployed(tmp_path: Path) -> None:
    base = tmp_path / "project"
    (base / "fn").mkdir(parents=True)
    (base / "fn" / "handler.py").write_text("def handle(req):\n    return req\n")
    (tmp_path / "secret.txt").write_text("password")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "handler.py").write_text("def handle(req):\n    return req\n")
    stack = base / "stack.yml"
    stack.write_text(
        "provider: {name: openfaas}\n"
        "configuration: {copy: [../secret.txt]}\n"
        "functions:\n"
        "  ok: {lang: python3-http, handler: ./fn, environment_file: [../secret.txt]}\n"
        "  away: {lang: python3-http, handler: ../elsewhere}\n"
    )
    plan = load_plan(stack, {})
    assert [f.name for f in plan.functions] == ["ok"]
    why = reasons(plan)
    assert "outside the template's directory" in why["configuration.copy ../secret.txt"]
    assert "outside the template's directory" in why["ok environment_file ../secret.txt"]
    assert "outside the template's directory" in why["away"]


def test_names_that_are_the_same_on_ember_are_refused(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text("def handle(req):\n    return req\n")
    stack = tmp_path / "stack.yml"
    stack.write_text(
        "provider: {name: openfaas}\n"
        "functions:\n"
        "  hello: {lang: python3-http, handler: ./a}\n"
        "  Hello: {lang: python3-http, handler: ./b}\n"
    )
    plan = load_plan(stack, {})
    assert [f.name for f in plan.functions] == ["hello"]
    assert "is hello's too" in reasons(plan)["Hello"]
