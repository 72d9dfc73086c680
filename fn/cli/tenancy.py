"""`fn key`, `fn secret`, `fn namespace`, `fn audit`: teams sharing one Ember (docs/security.md).

Keys and namespaces are the platform admin's (the admin token); secrets and the audit trail
are a namespace's (a deployer key of it, or the admin with --namespace).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fn.cli.api import api
from fn.cli.output import emit, fail, json_option, print_table


@click.group()
def key() -> None:
    """API keys: a namespace and a role each (reader, invoker, deployer)."""


@key.command("create")
@click.option(
    "--role",
    type=click.Choice(["reader", "invoker", "deployer"]),
    required=True,
    help="reader: see; invoker: also call private functions and publish; deployer: also "
    "deploy, delete, set policies, triggers and secrets.",
)
@click.option("--expires-in", help="Lifetime, like 90d or 12h. Default: no expiry.")
@click.option("--description", default="", help="What the key is for (shown by fn key list).")
@json_option
@click.pass_context
def key_create(
    ctx: click.Context, role: str, expires_in: str | None, description: str, as_json: bool
) -> None:
    """Create a key for the namespace (--namespace, FN_NAMESPACE; default: default). The key
    is printed once: only its hash is kept."""
    body: dict[str, Any] = {"role": role, "description": description}
    namespace = ctx.ensure_object(dict).get("namespace")
    if namespace:
        body["namespace"] = namespace
    if expires_in:
        body["expires_in"] = expires_in
    created = api(ctx, "POST", "/v1/keys", body)

    def show(k: dict[str, Any]) -> None:
        expiry = f", expires {k['expires_at']}" if k["expires_at"] else ""
        click.echo(f"Created {k['role']} key {k['id']} for namespace {k['namespace']}{expiry}.")
        click.echo("Keep it now: it is not shown again.", err=True)
        click.echo(k["key"])

    emit(created, as_json, show)


@key.command("list")
@json_option
@click.pass_context
def key_list(ctx: click.Context, as_json: bool) -> None:
    """Keys (never their secret part), of every namespace unless --namespace says one."""
    namespace = ctx.ensure_object(dict).get("namespace")
    path = "/v1/keys" + (f"?namespace={namespace}" if namespace else "")
    keys = api(ctx, "GET", path)["keys"]
    emit(
        keys,
        as_json,
        lambda ks: print_table(
            ["ID", "NAMESPACE", "ROLE", "CREATED", "EXPIRES", "REVOKED", "DESCRIPTION"],
            [
                [
                    k["id"],
                    k["namespace"],
                    k["role"],
                    k["created_at"][:19],
                    (k["expires_at"] or "")[:19],
                    (k["revoked_at"] or "")[:19],
                    k["description"],
                ]
                for k in ks
            ],
        ),
    )


@key.command("revoke")
@click.argument("key_id")
@json_option
@click.pass_context
def key_revoke(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Revoke a key: refused at once by every gateway."""
    revoked = api(ctx, "DELETE", f"/v1/keys/{key_id}")
    emit(revoked, as_json, lambda k: click.echo(f"Revoked key {k['id']} ({k['namespace']})."))


@click.group()
def secret() -> None:
    """Secrets: encrypted at rest, never shown again, given to functions deployed with
    --secret NAME as environment variables."""


@secret.command("set")
@click.argument("name")
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read KEY=VALUE lines from a file (# comments and blank lines skipped).",
)
@json_option
@click.pass_context
def secret_set(
    ctx: click.Context, name: str, pairs: tuple[str, ...], from_file: Path | None, as_json: bool
) -> None:
    """Set (or rotate) secret NAME; functions that read it get new instances at once."""
    lines = list(pairs)
    if from_file is not None:
        lines += [
            line
            for line in from_file.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    values: dict[str, str] = {}
    for line in lines:
        k, sep, v = line.partition("=")
        if not sep or not k.strip():
            fail(f"expected KEY=VALUE, got {k.strip()[:50]!r} without a value")  # value not shown
        values[k.strip()] = v
    if not values:
        fail("give KEY=VALUE pairs or --from-file")
    result = api(ctx, "PUT", f"/v1/secrets/{name}", {"values": values})

    def show(r: dict[str, Any]) -> None:
        rolled = f"; rolled {', '.join(r['functions'])}" if r["functions"] else ""
        click.echo(
            f"Set secret {r['secret']} ({', '.join(r['keys'])}) in {r['namespace']}{rolled}."
        )

    emit(result, as_json, show)


@secret.command("list")
@json_option
@click.pass_context
def secret_list(ctx: click.Context, as_json: bool) -> None:
    """Secrets of the namespace: names and keys, never values."""
    secrets = api(ctx, "GET", "/v1/secrets")["secrets"]
    emit(
        secrets,
        as_json,
        lambda ss: print_table(
            ["NAME", "KEYS", "UPDATED"],
            [[s["secret"], ",".join(s["keys"]), s["updated_at"][:19]] for s in ss],
        ),
    )


@secret.command("delete")
@click.argument("name")
@json_option
@click.pass_context
def secret_delete(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete a secret (functions that read it fail to start until it is set again)."""
    deleted = api(ctx, "DELETE", f"/v1/secrets/{name}")
    emit(deleted, as_json, lambda d: click.echo(f"Deleted secret {d['deleted']}."))


@click.group()
def namespace() -> None:
    """Namespaces: functions, their versions, policies, triggers and secrets are per namespace."""


@namespace.command("list")
@json_option
@click.pass_context
def namespace_list(ctx: click.Context, as_json: bool) -> None:
    """Namespaces (a key sees its own)."""
    names = api(ctx, "GET", "/v1/namespaces")["namespaces"]
    emit(
        names,
        as_json,
        lambda ns: print_table(
            ["NAME", "DEFAULT AUTH", "CREATED"],
            [[n["name"], n["auth"], n["created_at"][:19]] for n in ns],
        ),
    )


@namespace.command("set")
@click.argument("name")
@click.option(
    "--auth",
    type=click.Choice(["public", "key"]),
    help="What functions deployed in it without --auth get.",
)
@json_option
@click.pass_context
def namespace_set(ctx: click.Context, name: str, auth: str | None, as_json: bool) -> None:
    """Create namespace NAME, or set its default access (admin token)."""
    body = {"auth": auth} if auth else {}
    result = api(ctx, "PUT", f"/v1/namespaces/{name}", body)
    emit(
        result,
        as_json,
        lambda r: click.echo(f"Namespace {r['name']}: functions are {r['auth']} by default."),
    )


@click.command()
@click.option("-n", "--limit", default=20, show_default=True, help="How many entries.")
@json_option
@click.pass_context
def audit(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Admin actions, newest first: who, what, when, and the answer's status."""
    entries = api(ctx, "GET", f"/v1/audit?limit={limit}")["audit"]
    emit(
        entries,
        as_json,
        lambda es: print_table(
            ["WHEN", "WHO", "NAMESPACE", "ACTION", "PATH", "STATUS"],
            [
                [e["at"][:19], e["actor"], e["namespace"], e["action"], e["path"], e["status"]]
                for e in es
            ],
        ),
    )
