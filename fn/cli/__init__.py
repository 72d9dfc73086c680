"""`fn`: the command line of Ember.

Human-readable output by default, `--json` for scripts; exit 1 when the platform says no,
2 on a usage error. Every option that has an environment variable shows it in `--help`.

This module is the root group and its wiring; each command group lives in a module of its own.
"""

from __future__ import annotations

import click

from fn.cli import (
    activations,
    apply,
    describe,
    environments,
    events,
    functions,
    init,
    policy,
    tenancy,
    up,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="FN_URL",
    show_envvar=True,
    help="Gateway URL. Default: the one `fn up` wrote in the state dir.",
)
@click.option(
    "--token",
    envvar="FN_TOKEN",
    show_envvar=True,
    help="Admin API token or API key (fn key create). Default: the admin token `fn up` wrote "
    "in the state dir.",
)
@click.option(
    "--namespace",
    "-N",
    envvar="FN_NAMESPACE",
    show_envvar=True,
    help="Namespace of the functions, secrets and keys acted on. Default: the API key's own, "
    "else default.",
)
@click.version_option(package_name="ember-faas")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, namespace: str | None) -> None:
    """Ember: deploy a Python file and call it over HTTP."""
    ctx.ensure_object(dict).update(url=url, token=token, namespace=namespace)


# click lists commands by name, so the order here is only for reading.
for _command in (
    up.up,
    up.show_state_dir,
    functions.deploy,
    functions.build_logs,
    functions.list_,
    functions.versions,
    functions.rollback,
    functions.delete,
    activations.invoke,
    activations.logs,
    activations.activation,
    events.publish,
    events.topic,
    events.trigger,
    events.dlq,
    policy.policy,
    describe.describe,
    describe.completion,
    init.init,
    apply.apply,
    tenancy.key,
    tenancy.secret,
    tenancy.namespace,
    tenancy.audit,
    environments.env,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="fn")
