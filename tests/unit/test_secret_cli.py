"""`fn secret set` never prints what it was given: a line without `=` may be the value itself
(`fn secret set db "$DB_PASSWORD"`, a file of bare values), and errors end up in CI logs."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fn.cli import cli

VALUE = "hunter2-not-for-ci-logs"


def test_a_pair_without_a_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    runner = CliRunner()
    refused = runner.invoke(cli, ["--url", "http://127.0.0.1:9", "secret", "set", "db", VALUE])
    assert refused.exit_code != 0
    assert VALUE not in refused.output
    assert "KEY=VALUE" in refused.output
    assert "argument 1" in refused.output

    env = tmp_path / "db.env"
    env.write_text(f"# the database\nDB_USER=app\n{VALUE}\n")
    refused = runner.invoke(
        cli, ["--url", "http://127.0.0.1:9", "secret", "set", "db", "--from-file", str(env)]
    )
    assert refused.exit_code != 0
    assert VALUE not in refused.output
    assert "line 3" in refused.output
