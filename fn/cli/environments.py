"""`fn env trust|untrust|trusted`: environments the operator trusts (the admin token only).

A trusted environment's packages are imported once, in a zygote that the first instance of any
function using it is forked from (docs/cold-starts.md). Only the operator may trust one: its
packages' import code then runs in the process that builds other functions' walls
(docs/security.md).
"""

from __future__ import annotations

from typing import Any

import click

from fn.cli.api import api
from fn.cli.output import emit, fail, json_option, print_table


@click.group("env")
def env() -> None:
    """Trusted environments: their packages imported once, forked by their functions."""


def _hash(ctx: click.Context, env_hash: str | None, function: str | None) -> str:
    if (env_hash is None) == (function is None):
        fail("name the environment: fn env trust HASH, or fn env trust --function NAME")
    if env_hash is not None:
        return env_hash
    versions = api(ctx, "GET", f"/v1/functions/{function}/versions")["versions"]
    active = [v for v in versions if v.get("active")] or versions[:1]
    found = active[0].get("environment") if active else None
    if not found:
        fail(f'function "{function}" has no requirements: it has no environment to trust')
    return str(found)


def _show(e: dict[str, Any]) -> None:
    imported = ", ".join(e.get("imported") or e.get("modules") or []) or "its top-level packages"
    click.echo(f"environment {e['hash'][:12]}: zygote {e['state']} ({imported})")
    if e.get("failure"):
        click.echo(f"  last attempt failed: {e['failure']}")
    packages = [line.split()[0] for line in (e.get("lock") or "").splitlines() if line.strip()]
    if packages:  # what trusting it trusts: every package installed, not only those named
        click.echo(f"  trusted packages ({len(packages)}): {' '.join(packages)}")


@env.command("trust")
@click.argument("env_hash", metavar="HASH", required=False)
@click.option("--function", help="Trust the environment this function's active version uses.")
@click.option(
    "--module",
    "modules",
    multiple=True,
    help="A module its zygote imports (repeat it). Default: its packages' top-level modules.",
)
@json_option
@click.pass_context
def env_trust(
    ctx: click.Context,
    env_hash: str | None,
    function: str | None,
    modules: tuple[str, ...],
    as_json: bool,
) -> None:
    """Trust an environment (admin token only): its packages are imported in a zygote, before
    any function code, and its functions' first instances are forked from it."""
    target = _hash(ctx, env_hash, function)
    trusted = api(ctx, "PUT", f"/v1/environments/{target}/trust", {"modules": list(modules)})
    emit(trusted, as_json, _show)


@env.command("untrust")
@click.argument("env_hash", metavar="HASH", required=False)
@click.option("--function", help="Untrust the environment this function's active version uses.")
@json_option
@click.pass_context
def env_untrust(
    ctx: click.Context, env_hash: str | None, function: str | None, as_json: bool
) -> None:
    """Untrust an environment: its zygote forks no more and exits once its instances have."""
    target = _hash(ctx, env_hash, function)
    result = api(ctx, "DELETE", f"/v1/environments/{target}/trust")
    emit(result, as_json, lambda r: click.echo(f"environment {r['hash'][:12]} untrusted"))


@env.command("trusted")
@json_option
@click.pass_context
def env_trusted(ctx: click.Context, as_json: bool) -> None:
    """The trusted environments and their zygotes on this node."""
    found = api(ctx, "GET", "/v1/environments/trusted")["environments"]
    emit(
        found,
        as_json,
        lambda es: print_table(
            ["HASH", "ZYGOTE", "PID", "PSS", "IMPORTED", "REQUIREMENTS", "LAST FAILURE"],
            [
                [
                    e["hash"][:12],
                    e["state"],
                    e.get("pid") or "",
                    f"{(e.get('pss_bytes') or 0) >> 20} MiB",
                    ",".join(e.get("imported") or e["modules"]),
                    " ".join(e["requirements"].split())[:40],
                    (e.get("failure") or "")[:60],
                ]
                for e in es
            ],
        ),
    )
