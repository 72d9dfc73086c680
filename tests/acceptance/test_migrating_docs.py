"""docs/migrating.md's worked examples, run as written: every ```console block's commands, in
order, against `fn up` (so the migration guide cannot rot).

`$ fn ...` lines run the CLI; the first line shown after a `fn deploy` is compared with its
output (sha256 masked). `$ curl ...` lines run curl against the gateway (the doc writes
localhost:8080); the lines shown after one are its whole output, compared as JSON when they
parse as JSON. Blocks whose commands are expected to fail say so with an `fn:` line.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.test_cli import FN, ROOT, Cli, fn_up

DOC = ROOT / "docs" / "migrating.md"
DOC_URL = "localhost:8080"

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.timeout(900),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


def examples() -> list[tuple[str, list[str]]]:
    """(command, the lines the doc shows after it) for every command of every console block."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
    return steps


def _same(out: str, shown: list[str]) -> bool:
    text = "\n".join(shown)
    try:
        return bool(json.loads(out) == json.loads(text))
    except ValueError:
        return out.rstrip("\n") == text.rstrip("\n")


def test_every_example_in_the_migration_guide_runs_as_written(tmp_path: Path) -> None:
    steps = examples()
    assert any(c.startswith("fn deploy") for c, _ in steps), "docs/migrating.md has no example"
    with fn_up(tmp_path / "state") as cli:
        url = json.loads((tmp_path / "state" / "gateway.json").read_text())["url"]
        for command, shown in steps:
            args = shlex.split(command)
            if args[0] == "fn":
                _run_fn(cli, args, shown)
            elif args[0] == "curl":
                args = [a.replace(f"http://{DOC_URL}", url).replace(DOC_URL, url) for a in args]
                result = subprocess.run(args, capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, (command, result.stderr)
                assert _same(result.stdout, shown), (command, result.stdout, shown)
            else:
                pytest.fail(f"docs/migrating.md runs {args[0]!r}: only fn and curl are run")


def _run_fn(cli: Cli, args: list[str], shown: list[str]) -> None:
    result = subprocess.run(
        [FN, *args[1:]], env=cli.env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    expects_failure = bool(shown) and shown[0].startswith("fn: ")
    if expects_failure:
        assert result.returncode != 0, (args, result.stdout)
        prefix = shown[0].removesuffix("...").rstrip()
        assert result.stderr.startswith(prefix), (args, result.stderr, prefix)
        return
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    if args[1] == "deploy" and shown:
        masked = re.sub(r"sha256 [\w.]+", "sha256", shown[0])
        assert re.sub(r"sha256 \w+", "sha256", result.stdout.splitlines()[0]) == masked
