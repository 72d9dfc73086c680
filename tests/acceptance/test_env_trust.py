"""`fn env trust|trusted|untrust` as docs/cold-starts.md tells it: `fn` as a subprocess against
`fn up` as a subprocess; a team's deployer key is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli import Cli, fn_up
from tests.acceptance.test_teams import as_key

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with fn_up(tmp_path / "state") as running:
        yield running


def test_the_operator_trusts_a_functions_environment(cli: Cli, tmp_path: Path) -> None:
    project = tmp_path / "uses_six"
    project.mkdir()
    (project / "handler.py").write_text(
        "import sys\nPRELOADED = 'six' in sys.modules\nimport six\n\n"
        "def handler(event, context):\n    return {'preloaded': PRELOADED}\n"
    )
    (project / "requirements.txt").write_text("six==1.16.0\n")
    cli.ok("deploy", str(project))
    env_hash = json.loads(cli.ok("versions", "uses-six", "--json"))["versions"][0]["environment"]

    deployer = json.loads(cli.ok("key", "create", "--role", "deployer", "--json"))["key"]
    refused = as_key(cli, deployer).run("env", "trust", "--function", "uses-six")
    assert refused.returncode != 0
    assert "admin" in refused.stderr or "forbidden" in refused.stderr, refused.stderr

    out = cli.ok("env", "trust", "--function", "uses-six")
    assert out.startswith(f"environment {env_hash[:12]}: zygote ")
    assert "trusted packages (1): six==1.16.0" in out  # (every package of its lock)
    (trusted,) = json.loads(cli.ok("env", "trusted", "--json"))
    assert trusted["hash"] == env_hash
    assert "six" in trusted["requirements"]
    assert env_hash[:12] in cli.ok("env", "trusted")

    assert cli.ok("env", "untrust", env_hash) == f"environment {env_hash[:12]} untrusted\n"
    assert json.loads(cli.ok("env", "trusted", "--json")) == []
    missing = cli.run("env", "untrust", env_hash)
    assert missing.returncode != 0
    assert "not trusted" in missing.stderr
    no_name = cli.run("env", "trust")
    assert no_name.returncode != 0
    assert "fn env trust HASH, or fn env trust --function NAME" in no_name.stderr
