"""What a new user of `fn` tripped over (issue 14): ids cut in a pipe, invalid JSON sent as
bytes, a 5 ms timeout accepted, a handler's exception type dropped. One `fn up` for the module."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli import Cli, fn_up

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with fn_up(tmp_path_factory.mktemp("papercuts") / "state") as running:
        yield running


def deploy(cli: Cli, tmp_path: Path, name: str, source: str, *options: str) -> None:
    path = tmp_path / f"{name.replace('-', '_')}.py"
    path.write_text(source)
    cli.ok("deploy", str(path), "--name", name, *options)


def test_dlq_list_into_a_pipe_shows_ids_whole(cli: Cli, tmp_path: Path) -> None:
    deploy(
        cli,
        tmp_path,
        "refuses-orders",
        "def handler(event, context):\n"
        "    raise context.PermanentError('order rejected: ' + 'the reason is long ' * 5)\n",
    )
    for n in range(2):
        cli.ok("invoke", "refuses-orders", "--async", "--data", json.dumps({"n": n}))
    deadline = time.monotonic() + 30
    while len(dead := json.loads(cli.ok("dlq", "list", "--json"))["dead"]) < 2:
        assert time.monotonic() < deadline, "the calls were never dead-lettered"
        time.sleep(0.1)

    listed = cli.ok("dlq", "list")  # stdout is a pipe here, as in `fn dlq list | grep ...`

    lines = listed.splitlines()
    assert lines[0].split()[:2] == ["ID", "FUNCTION"]
    pasted = [line.split()[0] for line in lines[1:]]
    assert sorted(pasted) == sorted(d["id"] for d in dead), listed
    assert all(line == line.rstrip() for line in lines)
    assert "PermanentError: order rejected" in listed
    for activation_id in pasted:
        assert "dead-lettered: permanent error" in cli.ok("dlq", "show", activation_id)


def test_invoke_refuses_data_that_is_not_json_unless_given_a_content_type(
    cli: Cli, tmp_path: Path
) -> None:
    deploy(
        cli,
        tmp_path,
        "echo-body",
        "def handler(event, context):\n"
        "    return event if isinstance(event, dict) else {'raw': event.decode()}\n",
    )

    refused = cli.run("invoke", "echo-body", "--data", "{name: Ada}")

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert "--data is not valid JSON (Expecting property name enclosed in double quotes" in (
        refused.stderr
    )
    assert "--content-type" in refused.stderr
    body = tmp_path / "order.json"
    body.write_text("{'single': 'quotes'}")
    refused = cli.run("publish", "orders", "--data", f"@{body}")
    assert refused.returncode == 1
    assert f"{body} is not valid JSON" in refused.stderr
    # Said to be text: sent as it is.
    sent = cli.ok("invoke", "echo-body", "--data", "{name: Ada}", "--content-type", "text/plain")
    assert json.loads(sent) == {"raw": "{name: Ada}"}
    assert json.loads(cli.ok("invoke", "echo-body", "--data", '{"name": "Ada"}')) == {"name": "Ada"}


def test_deploy_refuses_a_timeout_below_100ms(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "quick.py"
    path.write_text("def handler(event, context):\n    return 1\n")

    refused = cli.run("deploy", str(path), "--timeout", "5ms")

    assert refused.returncode == 1
    assert 'invalid --timeout "5ms": expected a duration' in refused.stderr
    assert "at least 100ms" in refused.stderr
    assert "quick" not in cli.ok("list")
    cli.ok("deploy", str(path), "--timeout", "100ms")
    assert cli.ok("invoke", "quick") == "1\n"


def test_a_handler_error_names_its_exception_type(cli: Cli, tmp_path: Path) -> None:
    deploy(
        cli,
        tmp_path,
        "quote",
        "def handler(event, context):\n    return {'price': event['stock_price']}\n",
    )

    failed = cli.run("invoke", "quote", "--data", '{"symbol": "EMBR"}')

    assert failed.returncode == 1
    assert "HTTP 500: KeyError: 'stock_price'" in failed.stderr
    assert "fn logs quote --activation" in failed.stderr
