"""Setting up a team, as README and docs/security.md tell it: `fn` as a subprocess against
`fn up` as a subprocess (what `make up` runs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli import Cli, fn_up

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

HANDLER = (
    "import os\n"
    "def handler(event, context):\n"
    "    return {'team': 'a', 'has_password': os.environ.get('DB_PASSWORD') == 's3cr3t-pw'}\n"
)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with fn_up(tmp_path / "state") as running:
        yield running


def as_key(cli: Cli, key: str, **env: str) -> Cli:
    """`fn` run by a team member: their key instead of the admin token."""
    return Cli({**cli.env, "FN_TOKEN": key, **env}, cli.gateway)


def test_a_team_with_its_own_keys_secrets_and_private_functions(cli: Cli, tmp_path: Path) -> None:
    # The platform admin (the token of `fn up`) makes the team's keys.
    created = json.loads(
        cli.ok("--namespace", "team-a", "key", "create", "--role", "deployer", "--json")
    )
    deployer = created["key"]
    invoker = cli.ok("-N", "team-a", "key", "create", "--role", "invoker").strip().splitlines()[-1]
    assert invoker.startswith("ek_")
    listed = cli.ok("key", "list")
    assert created["id"] in listed
    assert deployer not in listed  # only hashes are kept

    team = as_key(cli, deployer)  # the key knows its namespace: no --namespace needed
    env_file = tmp_path / "db.env"
    env_file.write_text("# the database\nDB_PASSWORD=s3cr3t-pw\n")
    team.ok("secret", "set", "db", "--from-file", str(env_file))
    assert "s3cr3t-pw" not in team.ok("secret", "list")
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    team.ok("deploy", str(handler), "--name", "orders", "--auth", "key", "--secret", "db")
    versions = team.ok("versions", "orders", "--json")
    assert "s3cr3t-pw" not in versions
    assert json.loads(versions)["versions"][0]["secrets"] == ["db"]

    # Calls need an invoker key of team-a; fn invoke sends the key only to a private function.
    refused = cli.run("invoke", "orders")
    assert refused.returncode != 0
    caller = as_key(cli, invoker, FN_NAMESPACE="team-a")
    assert json.loads(caller.ok("invoke", "orders")) == {"team": "a", "has_password": True}
    assert "s3cr3t-pw" not in team.ok("logs", "orders")

    # The team cannot touch the default namespace; the admin sees what everyone did.
    refused = team.run("--namespace", "default", "list")
    assert refused.returncode == 1
    assert "namespace 'team-a'" in refused.stderr
    audit = cli.ok("audit", "--json")
    actions = [(e["actor"], e["action"]) for e in json.loads(audit)]
    assert (f"key:{created['id']}", "POST /v1/functions") in actions
    assert (f"key:{created['id']}", "PUT /v1/secrets/{secret}") in actions

    # Revoked: refused at once.
    cli.ok("key", "revoke", created["id"])
    refused = team.run("list")
    assert refused.returncode == 1
    assert "revoked" in refused.stderr
