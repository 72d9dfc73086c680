"""`fn up`: run the platform on this machine; and where fn finds it (the state dir)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fn.client import state_dir


@click.command()
@click.option(
    "--host",
    envvar="FN_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="FN_PORT",
    show_envvar=True,
    default=8080,
    show_default=True,
    type=int,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--state-dir",
    envvar="FN_STATE_DIR",
    show_envvar=True,
    type=click.Path(),
    help="Token, embedded Postgres data, gateway address. "
    "Default: $XDG_STATE_HOME/ember or ~/.local/state/ember.",
)
@click.option(
    "--keep-alive",
    envvar="FN_KEEP_ALIVE",
    show_envvar=True,
    default="10m",
    show_default=True,
    help="Idle time before an instance stops (scale to zero).",
)
@click.option(
    "--generic-pool",
    envvar="FN_GENERIC_POOL",
    show_envvar=True,
    default=2,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Prewarmed generic instances kept ready for cold starts.",
)
@click.option(
    "--max-body",
    envvar="FN_MAX_BODY",
    show_envvar=True,
    default="6Mi",
    show_default=True,
    help="Largest request body accepted.",
)
@click.option(
    "--isolation",
    envvar="FN_ISOLATION",
    show_envvar=True,
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "strict", "off"]),
    help="Sandboxing of instances: auto uses what this host allows and says what is "
    "off; strict refuses to start without every protection (docs/security.md).",
)
def up(
    host: str,
    port: int,
    state_dir: str | None,
    keep_alive: str,
    generic_pool: int,
    max_body: str,
    isolation: str,
) -> None:
    """Run the platform on this machine (embedded Postgres unless DATABASE_URL is set).

    Stops on Ctrl-C. The admin token is kept in the state dir, where fn finds it.
    """
    env = dict(
        os.environ,
        FN_HOST=host,
        FN_PORT=str(port),
        FN_KEEP_ALIVE=keep_alive,
        FN_GENERIC_POOL=str(generic_pool),
        FN_MAX_BODY=max_body,
        FN_ISOLATION=isolation,
    )
    if state_dir:
        env["FN_STATE_DIR"] = str(Path(state_dir).absolute())
    sys.stdout.flush()
    # -P: the directory fn up runs from is not put on the platform's sys.path.
    os.execve(sys.executable, [sys.executable, "-P", "-m", "gateway"], env)


@click.command("state-dir", hidden=True)
def show_state_dir() -> None:
    """Print the state dir fn reads the gateway address and token from."""
    click.echo(str(state_dir()))
