"""`fn` as a subprocess against `fn up` as a subprocess, with the embedded Postgres: what a user
does after `make up`. The README's quick tour runs here, so the README cannot rot."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import fn_up_process, shared

ROOT = Path(__file__).resolve().parents[2]
FN = str(Path(sys.executable).parent / "fn")

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


@dataclass
class Cli:
    env: dict[str, str]
    gateway: subprocess.Popen[bytes]

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FN, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin.decode() if stdin else None,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout


@contextmanager
def fn_up(state_dir: Path) -> Iterator[Cli]:
    """Run `fn up` on a free port with its state in `state_dir`; stop it by PID afterwards."""
    # FN_EXPOSE: where handlers leave what tests read
    with fn_up_process(state_dir, FN_EXPOSE=str(shared(state_dir.parent))) as running:
        yield Cli(running.env, running.process)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with fn_up(tmp_path / "state") as running:
        yield running


def quick_tour() -> list[tuple[str, list[str]]]:
    """The `$ fn ...` commands of the README's quick tour, each with the lines it shows."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick tour.*?```console\n(.*?)```", readme, re.S)
    assert block is not None, "README.md has no quick tour"
    steps: list[tuple[str, list[str]]] = []
    for line in block[1].splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def test_readme_quick_tour_works_as_written(cli: Cli) -> None:
    steps = quick_tour()
    assert len(steps) >= 8
    for command, shown in steps:
        args = shlex.split(command)
        assert args[0] == "fn"
        out = cli.ok(*args[1:])
        if args[1] == "invoke":
            assert [json.loads(x) for x in out.splitlines()] == [json.loads(x) for x in shown]
        elif args[1] in ("deploy", "rollback"):
            first = re.sub(r"sha256 \w+", "sha256", shown[0])
            assert re.sub(r"sha256 \w+", "sha256", out.splitlines()[0]) == first
        elif args[1] == "logs":
            assert shown[-1] in out
        else:
            assert out.splitlines()[0].split() == shown[0].split()  # table header


def test_json_output_and_errors_exit_non_zero(cli: Cli, tmp_path: Path) -> None:
    handler = tmp_path / "echo.py"
    handler.write_text("def handler(event, context):\n    return event\n")
    deployed = json.loads(cli.ok("deploy", str(handler), "--json"))
    assert (deployed["function"], deployed["version"]) == ("echo", 1)

    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    assert json.loads(cli.ok("invoke", "echo", "--data", f"@{payload}")) == {"from": "file"}
    result = json.loads(cli.ok("invoke", "echo", "--data", "[1, 2]", "--json"))
    assert (result["status"], result["body"]) == (200, [1, 2])
    assert json.loads(cli.ok("list", "--json"))["functions"][0]["name"] == "echo"
    logs = json.loads(cli.ok("logs", "echo", "--json"))["activations"]
    assert [a["status"] for a in logs] == ["success", "success"]
    one = json.loads(cli.ok("logs", "echo", "--activation", result["activation_id"], "--json"))
    assert one["activations"][0]["id"] == result["activation_id"]

    missing = cli.run("invoke", "nope")
    assert missing.returncode == 1
    assert "fn deploy nope.py" in missing.stderr

    broken = tmp_path / "broken.py"
    broken.write_text("def handler(event, context):\n    return {\n")
    bad = cli.run("deploy", str(broken))
    assert bad.returncode == 1
    assert "broken.py, line 2" in bad.stderr

    for option in (["--timeout", "-1"], ["--memory", "3x"]):
        bad = cli.run("deploy", str(handler), *option)
        assert bad.returncode == 1
        assert f'invalid {option[0]} "{option[1]}"' in bad.stderr
    assert json.loads(cli.ok("versions", "echo", "--json"))["versions"][0]["version"] == 1

    failing = tmp_path / "fails.py"
    failing.write_text("def handler(event, context):\n    raise KeyError('k')\n")
    cli.ok("deploy", str(failing))
    crashed = cli.run("invoke", "fails")
    assert crashed.returncode == 1
    assert "HTTP 500" in crashed.stderr
    assert "fn logs fails --activation" in crashed.stderr

    denied = subprocess.run(
        [FN, "list"],
        env={**cli.env, "FN_TOKEN": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 1
    assert "wrong admin token" in denied.stderr

    assert cli.ok("delete", "echo").strip() == "Deleted echo."
    assert cli.run("delete", "echo").returncode == 1


def test_state_is_kept_across_restarts(tmp_path: Path) -> None:
    """`fn up` reuses its embedded Postgres data and token on the next start."""
    handler = tmp_path / "keep.py"
    handler.write_text("def handler(event, context):\n    return 'kept'\n")
    with fn_up(tmp_path / "state") as first:
        first.ok("deploy", str(handler))
    token = (tmp_path / "state" / "token").read_text()
    with fn_up(tmp_path / "state") as second:
        assert second.ok("invoke", "keep").strip() == "kept"
    assert (tmp_path / "state" / "token").read_text() == token


def test_policy_simulate_on_a_csv_trace(tmp_path: Path) -> None:
    calls = tmp_path / "calls.csv"
    calls.write_text("function,timestamp_s\n" + "".join(f"f,{i * 1800}\n" for i in range(30)))
    plot = tmp_path / "trade-off.png"
    result = subprocess.run(
        [
            FN,
            "policy",
            "simulate",
            "--csv",
            str(calls),
            "--json",
            "--policy",
            "fixed:10m",
            "--policy",
            "histogram",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")
    rows = {r["policy"].split("@")[0]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"fixed:600s", "histogram", "oracle"}
    assert rows["fixed:600s"]["cold"] == 30
    assert rows["histogram"]["cold"] < 10

    bad = subprocess.run(
        [FN, "policy", "simulate", "--csv", str(calls), "--policy", "lru"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert 'unknown policy "lru"' in bad.stderr


def test_policy_set_and_show(cli: Cli, tmp_path: Path) -> None:
    handler = tmp_path / "pol.py"
    handler.write_text("def handler(event, context):\n    return 1\n")
    cli.ok("deploy", str(handler))
    shown = cli.ok(
        "policy", "set", "pol", "--prewarm", "histogram", "--keep-alive", "5m", "--min-warm", "1"
    )
    assert "prewarm        histogram" in shown
    assert "keep-alive     300s" in shown
    data = json.loads(cli.ok("policy", "show", "pol", "--json"))
    assert (data["prewarm"], data["keep_alive_s"], data["min_warm"]) == ("histogram", 300.0, 1)
    assert "(inherited)" in cli.ok("policy", "show", "pol").split("max-instances")[1]
    cli.ok("policy", "set", "--default", "--keep-alive", "2m")
    table = cli.ok("policy", "show")
    assert table.splitlines()[1].split()[:3] == ["default", "adaptive", "120s"]
    bad = cli.run("policy", "set", "pol", "--keep-alive", "soon")
    assert bad.returncode == 1
    assert 'invalid --keep-alive "soon"' in bad.stderr
    usage = cli.run("policy", "set", "--prewarm", "fixed")
    assert usage.returncode == 2


def test_events_from_the_cli(cli: Cli, tmp_path: Path) -> None:
    out = shared(tmp_path) / "seen"
    handler = tmp_path / "on_order.py"
    handler.write_text(
        "def handler(event, context):\n"
        f"    with open({str(out)!r}, 'a') as f:\n"
        "        f.write(repr(event) + '\\n')\n"
        "    if event.get('bad'):\n"
        "        raise context.PermanentError('bad order')\n"
        "    return {'ok': event}\n"
    )
    cli.ok("deploy", str(handler), "--max-attempts", "2")

    queued = cli.ok(
        "invoke", "on-order", "--async", "--data", '{"id": 1}', "--idempotency-key", "order-1"
    )
    activation = re.search(r"activation (\S+)", queued)
    assert activation is not None, queued
    again = cli.ok(
        "invoke", "on-order", "--async", "--data", '{"id": 1}', "--idempotency-key", "order-1"
    )
    assert again.startswith(f"Already queued: activation {activation[1]}")
    shown = json.loads(cli.ok("activation", activation[1], "--wait", "--json"))
    assert (shown["status"], shown["result"], shown["attempts"]) == (
        "succeeded",
        {"ok": {"id": 1}},
        1,
    )

    failed = cli.run("publish", "orders.created", "--data", "{}")
    assert failed.returncode == 1
    assert "fn topic create orders.created" in failed.stderr
    assert cli.ok("topic", "create", "orders.created") == "Created topic orders.created.\n"
    added = cli.ok("trigger", "add", "on-order", "--topic", "orders.created")
    assert added.startswith("Added trigger 1: on-order runs on topic orders.created")
    bad_cron = cli.run("trigger", "add", "on-order", "--cron", "99 * * * *")
    assert bad_cron.returncode == 1
    assert 'invalid --cron "99 * * * *"' in bad_cron.stderr
    assert "topic orders.created" in cli.ok("trigger", "list")

    assert "to 1 subscriber(s)" in cli.ok("publish", "orders.created", "--data", '{"id": 2}')
    cli.ok("publish", "orders.created", "--data", '{"id": 3, "bad": true}')
    dead_list = json.loads(cli.ok("dlq", "list", "--json"))["dead"]
    deadline = time.monotonic() + 20
    while not dead_list:
        assert time.monotonic() < deadline, "the bad event was never dead-lettered"
        time.sleep(0.1)
        dead_list = json.loads(cli.ok("dlq", "list", "--json"))["dead"]
    dead = dead_list[0]
    assert (dead["error"]["type"], dead["attempts"]) == ("PermanentError", 1)
    assert "dead-lettered: permanent error" in cli.ok("dlq", "show", dead["id"])
    assert cli.ok("dlq", "redrive", dead["id"]) == "Resent 1 dead letter(s).\n"
    failed = cli.run("activation", dead["id"], "--wait", "5")
    assert failed.returncode == 1  # dead again: the error is permanent
    assert "PermanentError: bad order" in failed.stdout
    while "{'id': 2}" not in out.read_text():
        assert time.monotonic() < deadline, "event 2 was never delivered"
        time.sleep(0.1)
    assert cli.ok("trigger", "delete", "1") == "Deleted trigger 1.\n"


def test_a_directory_with_requirements_from_the_cli(cli: Cli, tmp_path: Path) -> None:
    project = tmp_path / "word_count"
    (project / "lib").mkdir(parents=True)
    (project / "handler.py").write_text(
        "import six\nfrom lib.count import count\n\n"
        "def handler(event, context):\n"
        "    return {'words': count(event['text']), 'six': six.__version__}\n"
    )
    (project / "lib" / "__init__.py").write_text("")
    (project / "lib" / "count.py").write_text("def count(text):\n    return len(text.split())\n")
    (project / "requirements.txt").write_text("six==1.16.0\n")
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("not shipped\n")

    out = cli.ok("deploy", str(project))
    assert out.startswith("Deployed word-count version 1")
    assert "Environment " in out
    assert json.loads(cli.ok("invoke", "word-count", "--data", '{"text": "a b c"}')) == {
        "words": 3,
        "six": "1.16.0",
    }
    logs = cli.ok("build-logs", "word-count")
    assert "succeeded" in logs
    assert "Successfully installed six-1.16.0" in logs
    versions = json.loads(cli.ok("versions", "word-count", "--json"))["versions"]
    assert versions[0]["files"] == ["handler.py", "lib/__init__.py", "lib/count.py"]

    (project / "requirements.txt").write_text("six==0.0.0-no-such-version\n")
    failed = cli.run("deploy", str(project))
    assert failed.returncode == 1
    assert "installing the requirements failed" in failed.stderr
    assert "six==0.0.0-no-such-version" in failed.stderr
    assert "failed" in cli.ok("build-logs", "word-count")
    assert (
        json.loads(cli.ok("invoke", "word-count", "--data", '{"text": "still here"}'))["words"] == 2
    )
