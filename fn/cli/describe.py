"""`fn describe NAME`: a function at a glance (its settings, versions, the policy in force,
triggers, warm instances, the last hour's calls and its recent errors); and `fn completion`,
the shell completion script (bash, zsh, fish) that also completes function names."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from fn.cli.api import api, complete_function
from fn.cli.output import emit, json_option, print_table, shown, wide_option

RECENT_ERRORS = 5


@click.command()
@click.argument("name", shell_complete=complete_function)
@wide_option
@json_option
@click.pass_context
def describe(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show function NAME: settings, versions, policy, triggers, warm instances, recent errors."""
    n = quote(name)
    function = api(ctx, "GET", f"/v1/functions/{n}")
    versions = api(ctx, "GET", f"/v1/functions/{n}/versions")["versions"]
    policy = api(ctx, "GET", f"/v1/functions/{n}/policy")
    triggers = api(ctx, "GET", f"/v1/triggers?function={n}")["triggers"]
    stats = api(ctx, "GET", f"/v1/functions/{n}/stats?since=1h")
    recent = api(ctx, "GET", f"/v1/functions/{n}/logs?since=1d&limit=1000")["activations"]
    errors = [a for a in recent if a["status"] != "success"][-RECENT_ERRORS:]
    data = {
        "function": function,
        "versions": versions,
        "policy": policy,
        "triggers": triggers,
        "stats": stats,
        "recent_errors": errors,
    }
    emit(data, as_json, _print)


def _print(data: dict[str, Any]) -> None:
    f, active, stats = data["function"], data["function"]["active"], data["stats"]
    namespace = f.get("namespace", "default")
    click.secho(f["name"] if namespace == "default" else f"{namespace}/{f['name']}", bold=True)
    rows = [
        ("active version", f"{f['active_version']} of {f['versions']} (sha256 {active['sha256']})"),
        ("handler", f"{active['filename']}:{active['handler']} ({active['style']} style)"),
        ("timeout", f"{active['timeout_s']:g}s"),
        ("memory", f"{active['memory_bytes'] // (1 << 20)} MiB"),
        ("concurrency", str(active["concurrency"])),
        ("cpus", f"{active['cpus']:g}"),
        ("network", active["network"]),
        ("retries", f"{active['max_attempts']} attempts within {active['max_event_age_s']:g}s"),
        ("env", ", ".join(sorted(active["env"])) or "-"),
        ("requirements", " ".join((active["requirements"] or "").split()) or "-"),
    ]
    p = data["policy"]
    rows.append(
        (
            "policy",
            f"{p['prewarm']}, keep-alive {p['keep_alive_s']:g}s, min-warm {p['min_warm']}, "
            f"max-instances {p['max_instances']}" + (" (set for it)" if p["set"] else ""),
        )
    )
    rows.append(
        ("warm instances", f"{stats['warm_instances']} ({stats['busy_instances']} busy)"),
    )
    latency = (
        f", p50 {stats['p50_ms']:.1f}ms, p99 {stats['p99_ms']:.1f}ms" if stats["calls"] else ""
    )
    rows.append(
        (
            "last hour",
            f"{stats['calls']} calls, {stats['errors']} errors, {stats['cold']} cold starts"
            + latency,
        )
    )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    click.echo()
    click.secho("Versions", bold=True)
    print_table(
        ["VERSION", "SHA256", "CREATED", "ACTIVE"],
        [
            (v["version"], v["sha256"], v["created_at"][:19], "*" if v.get("active") else "")
            for v in data["versions"]
        ],
        whole=("VERSION", "SHA256"),
    )
    click.echo()
    click.secho("Triggers", bold=True)
    if data["triggers"]:
        print_table(
            ["ID", "KIND", "WHAT"],
            [(t["id"], t["kind"], _trigger_what(t)) for t in data["triggers"]],
        )
    else:
        click.echo(f"  none (add one with: fn trigger add {f['name']} --topic T)")
    click.echo()
    click.secho("Recent errors", bold=True)
    if not data["recent_errors"]:
        click.echo("  none in the last day")
    for a in data["recent_errors"]:
        error = a.get("error") or {}
        click.echo(
            shown(
                f"  {a['started_at'][:19]} {a['id']} {a['status']}: "
                f"{error.get('type', '')} {error.get('message', '')}".rstrip()
            )
        )


def _trigger_what(t: dict[str, Any]) -> str:
    if t["kind"] == "topic":
        return str(t.get("topic"))
    if t["kind"] == "cron":
        return f"{t.get('cron')} ({t.get('timezone')})"
    return f"{t.get('table')} on {','.join(t.get('on') or [])}"


COMPLETION_HELP = """Print the shell completion script for SHELL (bash, zsh or fish); it
completes commands, options and function names (asking the gateway).

\b
  bash:  echo 'eval "$(fn completion bash)"' >> ~/.bashrc
  zsh:   echo 'eval "$(fn completion zsh)"' >> ~/.zshrc
  fish:  fn completion fish > ~/.config/fish/completions/fn.fish
"""


@click.command(help=COMPLETION_HELP)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    from click.shell_completion import get_completion_class

    klass = get_completion_class(shell)
    assert klass is not None  # (bash, zsh and fish are click's own)
    click.echo(klass(ctx.find_root().command, {}, "fn", "_FN_COMPLETE").source())
