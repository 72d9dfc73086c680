"""Warm-pool policies: show and set them on the running platform, and simulate them on a
trace (locally, in scheduler.simulate's own process)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from fn.cli.api import api, complete_function
from fn.cli.output import emit, json_option, print_table


@click.group()
def policy() -> None:
    """Warm-pool policies: show, set (live, no restart), and simulate on a trace."""


def _print_policy(p: dict[str, Any]) -> None:
    explicit = set(p.get("set", {}))

    def mark(field: str) -> str:
        return "" if field in explicit else "  (inherited)"

    click.echo(f"{p['function']}:")
    click.echo(f"  prewarm        {p['prewarm']}{mark('prewarm')}")
    click.echo(f"  keep-alive     {p['keep_alive_s']:g}s{mark('keep_alive_s')}")
    click.echo(f"  min-warm       {p['min_warm']}{mark('min_warm')}")
    click.echo(f"  max-instances  {p['max_instances']}{mark('max_instances')}")


@policy.command("show")
@click.argument("name", required=False, shell_complete=complete_function)
@json_option
@click.pass_context
def policy_show(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Show the policy of function NAME, or the default and every override."""
    if name:
        emit(api(ctx, "GET", f"/v1/functions/{name}/policy"), as_json, _print_policy)
    else:
        emit(api(ctx, "GET", "/v1/policies"), as_json, _print_policies)


def _print_policies(data: dict[str, Any]) -> None:
    print_table(
        ["FUNCTION", "PREWARM", "KEEP-ALIVE", "MIN-WARM", "MAX-INSTANCES"],
        [
            (
                p["function"],
                p["prewarm"],
                f"{p['keep_alive_s']:g}s",
                p["min_warm"],
                p["max_instances"],
            )
            for p in [data["default"], *data["functions"]]
        ],
    )


@policy.command("set")
@click.argument("name", required=False, shell_complete=complete_function)
@click.option(
    "--default",
    "is_default",
    is_flag=True,
    help="Set the default that functions without their own setting use.",
)
@click.option(
    "--prewarm",
    type=click.Choice(["adaptive", "fixed", "off", "histogram", "histogram-cost"]),
    help="adaptive (the default): plan each function's keeps and prewarms by cost from its "
    "idle times, with a population prior and timer prediction; fixed (or off): keep idle "
    "instances for --keep-alive; histogram: learn each function's idle times, unload and "
    "prewarm before the next call; histogram-cost: the same, keeping warm only where that "
    "costs less than the cold starts it saves (see docs/policies.md).",
)
@click.option(
    "--keep-alive",
    help="Idle time before scale to zero, like 10m (histogram kinds: until a function's first "
    "idle times; adaptive: its idle instances kept at most 3 keep-alives until its 20th).",
)
@click.option("--min-warm", type=click.IntRange(0, 10_000), help="Instances always warm.")
@click.option(
    "--max-instances", type=click.IntRange(1, 10_000), help="Instances of one version at most."
)
@click.option(
    "--unset",
    "unset",
    multiple=True,
    type=click.Choice(["prewarm", "keep-alive", "min-warm", "max-instances"]),
    help="Drop this setting (repeatable): it is inherited again.",
)
@json_option
@click.pass_context
def policy_set(
    ctx: click.Context,
    name: str | None,
    is_default: bool,
    prewarm: str | None,
    keep_alive: str | None,
    min_warm: int | None,
    max_instances: int | None,
    unset: tuple[str, ...],
    as_json: bool,
) -> None:
    """Set the warm-pool policy of function NAME (or --default); applies at once."""
    if bool(name) == is_default:
        raise click.UsageError("give a function NAME or --default (not both)")
    payload = {
        "prewarm": prewarm,
        "keep_alive": keep_alive,
        "min_warm": min_warm,
        "max_instances": max_instances,
        "unset": [u.replace("-", "_") for u in unset] or None,
    }
    path = "/v1/policy" if is_default else f"/v1/functions/{name}/policy"
    data = api(ctx, "PUT", path, {k: v for k, v in payload.items() if v is not None})
    emit(data, as_json, _print_policy)


@policy.command("reset")
@click.argument("name", shell_complete=complete_function)
@click.pass_context
def policy_reset(ctx: click.Context, name: str) -> None:
    """Drop NAME's own policy: it follows the default again."""
    _print_policy(api(ctx, "DELETE", f"/v1/functions/{name}/policy"))


@policy.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulate(args: tuple[str, ...]) -> None:
    """Replay a trace through policies: --trace DIR | --csv FILE, --policy fixed:10m ...

    Prints cold starts, idle memory (GB·s) and instance starts per policy, with the oracle
    (knows every next call) at the first policy's idle memory as the lower bound. Runs locally;
    `fn policy simulate --help` lists every option.
    """
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "scheduler.simulate", *args])
