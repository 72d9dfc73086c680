"""The commands of issue 19 as a user runs them, against one `fn up`: `fn init` (each style's
handler passes its own test), `fn invoke -X/--path/--header/--query`, `fn logs --since` and
`--follow`, `fn describe`, `fn apply` (dry run, create, nothing the second time, update, prune),
shell completion of function names, `--wide`; and every command of `fn --help` is in the README."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fn.cli.init import TEMPLATES
from tests.acceptance.test_cli import FN, ROOT, Cli, fn_up

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

ECHO_REQUEST = """\
def handler(event, context):
    print("seen", context.method, context.path)
    return {"method": context.method, "path": context.path, "query": context.query,
            "header": {k.lower(): v for k, v in context.headers.items()}.get("x-colour")}
"""


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with fn_up(tmp_path_factory.mktemp("tools") / "state") as running:
        yield running


def test_init_writes_a_handler_its_test_and_requirements(cli: Cli, tmp_path: Path) -> None:
    for style in TEMPLATES:
        out = cli.ok("init", f"f-{style}", "--style", style, "--dir", str(tmp_path))
        folder = tmp_path / f"f-{style}"
        assert f"fn deploy {folder}/" in out
        assert (folder / "requirements.txt").is_file()
        tests = list(folder.glob("test_*.py"))
        assert len(tests) == 1
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests[0])],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, (style, run.stdout, run.stderr)
    refused = cli.run("init", "f-ember", "--dir", str(tmp_path))
    assert refused.returncode == 1
    assert "exists and is not empty" in refused.stderr
    cli.ok("deploy", str(tmp_path / "f-ember"), "--name", "greeter")
    assert json.loads(cli.ok("invoke", "greeter", "--data", '{"name": "Ada"}')) == {"hello": "Ada"}
    cli.ok("deploy", str(tmp_path / "f-asgi"), "--name", "site", "--asgi", "main:app")
    reply = json.loads(cli.ok("invoke", "site", "-X", "GET", "--path", "/x/y"))
    assert reply == {"hello": "world", "path": "/x/y"}


def test_invoke_with_method_path_headers_and_query(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "echo_request.py").write_text(ECHO_REQUEST)
    cli.ok("deploy", str(tmp_path / "echo_request.py"), "--name", "echo-request")
    out = cli.ok(
        "invoke",
        "echo-request",
        "-X",
        "PUT",
        "--path",
        "/a/b",
        "--header",
        "X-Colour: teal",
        "--query",
        "k=v",
        "--query",
        "k=w x",
    )
    assert json.loads(out) == {
        "method": "PUT",
        "path": "/a/b",
        "query": "k=v&k=w+x",
        "header": "teal",
    }
    bad = cli.run("invoke", "echo-request", "--header", "no-colon")
    assert bad.returncode == 2
    assert "is not K:V" in bad.stderr

    # fn logs --since
    logs = cli.ok("logs", "echo-request", "--since", "10m")
    assert "seen PUT /a/b" in logs
    assert cli.ok("logs", "echo-request", "--since", "10m", "--json").count('"id"') == 1
    bad = cli.run("logs", "echo-request", "--since", "soon")
    assert bad.returncode == 1
    assert "since" in bad.stderr


def test_logs_follow_prints_new_activations_as_they_happen(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "echo_request.py").write_text(ECHO_REQUEST)
    cli.ok("deploy", str(tmp_path / "echo_request.py"), "--name", "followed")
    with subprocess.Popen(
        [FN, "logs", "followed", "--follow", "--json"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        try:
            assert follower.stdout is not None
            cli.ok("invoke", "followed", "-X", "PATCH", "--path", "/live")
            activation = json.loads(follower.stdout.readline())  # (blocks until streamed)
            assert activation["function"] == "followed"
            assert "seen PATCH /live" in activation["logs"]
            cli.ok("invoke", "followed", "-X", "DELETE")
            assert "seen DELETE /" in json.loads(follower.stdout.readline())["logs"]
            assert follower.poll() is None  # still following
        finally:
            follower.terminate()  # (our own process, by its PID)
            follower.wait(timeout=10)


def test_describe_shows_settings_policy_triggers_and_errors(cli: Cli, tmp_path: Path) -> None:
    source = (
        "def handler(event, context):\n"
        "    if event.get('fail'):\n"
        "        raise KeyError('x')\n"
        "    return 1\n"
    )
    (tmp_path / "described.py").write_text(source)
    cli.ok("deploy", str(tmp_path / "described.py"), "--timeout", "7s", "--env", "A=1")
    cli.ok("topic", "create", "described.events")
    cli.ok("trigger", "add", "described", "--topic", "described.events")
    cli.ok("policy", "set", "described", "--max-instances", "3")
    cli.ok("invoke", "described", "--data", "{}")
    assert cli.run("invoke", "described", "--data", '{"fail": true}').returncode == 1
    out = cli.ok("describe", "described")
    assert "timeout         7s" in out
    assert "max-instances 3 (set for it)" in out
    assert "described.events" in out
    assert "2 calls, 1 errors" in out
    assert "KeyError" in out
    data = json.loads(cli.ok("describe", "described", "--json"))
    assert data["function"]["active"]["env"] == {"A": "1"}
    assert [e["status"] for e in data["recent_errors"]] == ["error"]
    missing = cli.run("describe", "nosuch")
    assert missing.returncode == 1
    assert "fn deploy" in missing.stderr


def test_apply_is_idempotent_updates_and_prunes(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init", "applied", "--dir", str(tmp_path))
    cli.ok("init", "other", "--style", "openwhisk", "--dir", str(tmp_path))
    spec = tmp_path / "ember.yaml"
    spec.write_text(
        """\
topics: [applied.orders]
functions:
  applied:
    path: applied
    timeout: 9s
    env: {GREETING: hi}
    policy: {prewarm: histogram, max_instances: 4}
    triggers:
      - topic: applied.orders
      - cron: "*/5 * * * *"
        timezone: Europe/Paris
  other:
    path: other
"""
    )
    dry = cli.ok("apply", "-f", str(spec), "--dry-run")
    assert "+ function applied" in dry
    assert "+ trigger of applied: topic applied.orders" in dry
    assert "dry run: nothing changed" in dry
    assert "applied" not in cli.ok("list")  # the dry run made nothing
    first = json.loads(cli.ok("apply", "-f", str(spec), "--json"))
    assert {c["what"] for c in first["changes"]} >= {
        "topic applied.orders",
        "function applied",
        "function other",
        "policy of applied",
    }
    second = cli.ok("apply", "-f", str(spec))
    assert second.strip() == "Nothing to change: the platform is as the file says."
    assert json.loads(cli.ok("versions", "applied", "--json"))["versions"][0]["version"] == 1
    policy = json.loads(cli.ok("policy", "show", "applied", "--json"))
    assert (policy["prewarm"], policy["max_instances"]) == ("histogram", 4)
    triggers = json.loads(cli.ok("trigger", "list", "applied", "--json"))["triggers"]
    assert sorted(t["kind"] for t in triggers) == ["cron", "topic"]

    # a change of code and a setting: one update, shown by the dry run first
    spec.write_text(spec.read_text().replace("timeout: 9s", "timeout: 12s"))
    (tmp_path / "applied" / "handler.py").write_text(
        (tmp_path / "applied" / "handler.py").read_text() + "\nVERSION = 2\n"
    )
    dry = cli.ok("apply", "-f", str(spec), "--dry-run")
    assert "~ function applied" in dry
    assert "code" in dry
    assert "timeout: 9.0 -> 12.0" in dry
    cli.ok("apply", "-f", str(spec))
    assert json.loads(cli.ok("versions", "applied", "--json"))["versions"][0]["version"] == 2
    assert "Nothing to change" in cli.ok("apply", "-f", str(spec))

    # --prune: what the file no longer names goes (its triggers first)
    spec.write_text("functions:\n  applied:\n    path: applied\n    timeout: 12s\n")
    pruned = cli.ok("apply", "-f", str(spec), "--prune")
    assert "- function other" in pruned
    assert "- topic applied.orders" in pruned
    assert "- trigger" in pruned
    listed = cli.ok("list")
    assert "applied" in listed
    assert "other" not in listed
    assert "Nothing to change" in cli.ok("apply", "-f", str(spec), "--prune")

    spec.write_text("functions:\n  broken: {}\n")
    bad = cli.run("apply", "-f", str(spec))
    assert bad.returncode == 1
    assert "needs a path" in bad.stderr


def test_apply_describe_and_logs_in_a_namespace(cli: Cli, tmp_path: Path) -> None:
    """`fn apply` works in the file's namespace (leaving default's function of the same name and
    its trigger alone); `fn --namespace` describe, invoke and logs (--follow too) find it."""
    (tmp_path / "nsd.py").write_text(ECHO_REQUEST)
    cli.ok("deploy", str(tmp_path / "nsd.py"))  # default's nsd, with a trigger of its own
    cli.ok("topic", "create", "nsd.events")
    cli.ok("trigger", "add", "nsd", "--topic", "nsd.events")
    spec = tmp_path / "ember.yaml"
    spec.write_text(
        "namespace: team-b\n"
        "topics: [nsd.events]\n"
        "functions:\n"
        "  nsd:\n"
        "    path: nsd.py\n"
        "    timeout: 5s\n"
        "    triggers:\n"
        "      - cron: '*/5 * * * *'\n"
    )
    first = cli.ok("apply", "-f", str(spec))
    assert "+ function nsd" in first
    assert "+ topic nsd.events" in first
    assert "- trigger" not in first  # (default's trigger is not the file's business)
    assert "Nothing to change" in cli.ok("apply", "-f", str(spec), "--prune")
    assert "Nothing to change" in cli.ok("--namespace", "team-b", "apply", "-f", str(spec))
    other = cli.run("--namespace", "team-c", "apply", "-f", str(spec))
    assert other.returncode == 1
    assert "team-b" in other.stderr
    default_triggers = json.loads(cli.ok("trigger", "list", "nsd", "--json"))["triggers"]
    assert [t["kind"] for t in default_triggers] == ["topic"]
    team_b = json.loads(cli.ok("--namespace", "team-b", "trigger", "list", "nsd", "--json"))
    assert [(t["kind"], t["namespace"]) for t in team_b["triggers"]] == [("cron", "team-b")]

    described = cli.ok("--namespace", "team-b", "describe", "nsd")
    assert described.startswith("team-b/nsd")
    assert "timeout         5s" in described
    with subprocess.Popen(
        [FN, "--namespace", "team-b", "logs", "nsd", "--follow", "--json"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        try:
            assert follower.stdout is not None
            cli.ok("--namespace", "team-b", "invoke", "nsd", "--path", "/b")
            streamed = json.loads(follower.stdout.readline())  # (blocks until streamed)
            assert (streamed["namespace"], streamed["function"]) == ("team-b", "nsd")
            assert "seen POST /b" in streamed["logs"]
        finally:
            follower.terminate()  # (our own process, by its PID)
            follower.wait(timeout=10)
    logs = json.loads(cli.ok("--namespace", "team-b", "logs", "nsd", "--since", "10m", "--json"))
    assert [a["namespace"] for a in logs["activations"]] == ["team-b"]
    assert json.loads(cli.ok("logs", "nsd", "--since", "10m", "--json"))["activations"] == []


def test_shell_completion_completes_function_names(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "completed_fn.py").write_text("def handler(event, context):\n    return 1\n")
    cli.ok("deploy", str(tmp_path / "completed_fn.py"), "--name", "completed-fn")
    for shell in ("bash", "zsh", "fish"):
        assert "_FN_COMPLETE" in cli.ok("completion", shell)
    env = {
        **cli.env,
        "_FN_COMPLETE": "bash_complete",
        "COMP_WORDS": "fn logs comp",
        "COMP_CWORD": "2",
    }
    done = subprocess.run([FN], env=env, capture_output=True, text=True, timeout=30)
    assert "plain,completed-fn" in done.stdout.splitlines()
    env["COMP_WORDS"], env["COMP_CWORD"] = "fn desc", "1"
    done = subprocess.run([FN], env=env, capture_output=True, text=True, timeout=30)
    assert "plain,describe" in done.stdout.splitlines()


def test_wide_tables_keep_every_column_whole(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "wide_fn.py").write_text("def handler(event, context):\n    return 1\n")
    cli.ok("deploy", str(tmp_path / "wide_fn.py"), "--name", "a-function-with-a-long-name")
    env = {**cli.env, "COLUMNS": "30", "FORCE_COLOR": "1"}  # (rich: a terminal 30 wide)
    narrow = subprocess.run([FN, "list"], env=env, capture_output=True, text=True, timeout=30)
    wide = subprocess.run(
        [FN, "list", "--wide"], env=env, capture_output=True, text=True, timeout=30
    )
    assert narrow.returncode == wide.returncode == 0
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    narrow_lines = ansi.sub("", narrow.stdout).splitlines()
    wide_lines = ansi.sub("", wide.stdout).splitlines()
    assert max(len(line) for line in narrow_lines) <= 30  # fits the terminal
    assert "a-function-with-a-long-name" in "\n".join(wide_lines)
    assert max(len(line) for line in wide_lines) > 30


def test_every_command_is_in_the_readme() -> None:
    from fn.cli import cli as root

    readme = (ROOT / "README.md").read_text()
    missing = [name for name in root.commands if not re.search(rf"(`|\$ )fn {name}\b", readme)]
    assert missing == [], f"commands of fn --help the README does not mention: {missing}"
    help_text = subprocess.run(
        [FN, "--help"], capture_output=True, text=True, timeout=30, env=dict(os.environ)
    ).stdout
    for name in ("apply", "describe", "init", "completion", "logs", "invoke"):
        assert re.search(rf"^\s+{name}\s", help_text, re.M), name


def test_deploy_takes_a_stack_file_with_f_as_faas_cli_does(cli: Cli) -> None:
    stack = ROOT / "examples/migrating/openfaas-stack/stack.yml"
    out = cli.ok("deploy", "-f", str(stack))
    assert "openfaas-stack-example" in out
    assert "openfaas-stack-example" in cli.ok("list")
    both = cli.run("deploy", str(stack), "-f", str(stack))
    assert both.returncode == 2
    assert "not both" in both.stderr
    assert cli.run("deploy").returncode == 2
