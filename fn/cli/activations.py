"""Calls and what they leave: invoke (at once or queued), the logs of recent activations,
and one activation followed until an async call settles."""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import quote

import click

from fn.cli.api import CONTENT_TYPE_HELP, DATA_HELP, api, client, complete_function, read_data
from fn.cli.output import emit, fail, heading, json_option, shown
from fn.client import ClientError, Reply, error_message


@click.command()
@click.argument("name", shell_complete=complete_function)
@click.option("--data", "-d", help=DATA_HELP)
@click.option("--content-type", help=CONTENT_TYPE_HELP)
@click.option(
    "--method",
    "-X",
    default="POST",
    show_default=True,
    type=click.Choice(["GET", "POST", "PUT", "PATCH", "DELETE"], case_sensitive=False),
    help="The HTTP method of the call.",
)
@click.option("--path", "subpath", default="", help="The path after /fn/NAME, like /a/b.")
@click.option(
    "--header", "-H", "header_pairs", multiple=True, help="A request header K:V (repeatable)."
)
@click.option(
    "--query", "-q", "query_pairs", multiple=True, help="A query parameter k=v (repeatable)."
)
@click.option(
    "--async",
    "is_async",
    is_flag=True,
    help="Queue the call and print its activation id at once (see: fn activation).",
)
@click.option(
    "--idempotency-key",
    help="With --async: a repeat with the same key returns the "
    "first call's activation instead of running again.",
)
@json_option
@click.pass_context
def invoke(
    ctx: click.Context,
    name: str,
    data: str | None,
    content_type: str | None,
    method: str,
    subpath: str,
    header_pairs: tuple[str, ...],
    query_pairs: tuple[str, ...],
    is_async: bool,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Call function NAME (NAME:VERSION pins a version) and print its response.

    The handler sees the method, the path after /fn/NAME, the query and the headers:
    fn invoke NAME -X PUT --path /a/b --header K:V --query k=v."""
    body, content_type = read_data(data, content_type)
    headers = _pairs(header_pairs, ":", "--header", "K:V")
    call: dict[str, Any] = {
        "method": method.upper(),
        "path": subpath,
        "query": list(_pairs(query_pairs, "=", "--query", "k=v", unique=False)),
    }
    if is_async:
        headers["Prefer"] = "respond-async"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            reply = client(ctx).invoke(name, body, content_type, headers, **call)
        except ClientError as exc:
            fail(str(exc))
        try:
            answer = reply.json()
        except ValueError:
            answer = {}
        if reply.status != 202:
            fail(error_message(reply.status, answer))
        emit(answer, as_json, _print_queued)
        return
    try:
        reply = client(ctx).invoke(name, body, content_type, headers, **call)
    except ClientError as exc:
        fail(str(exc))
    emit(
        reply,
        as_json,
        lambda r: _print_reply(name, r),
        to_json=lambda r: {
            "status": r.status,
            "activation_id": r.headers.get("x-ember-activation-id"),
            "body": _decoded_body(r),
        },
    )
    if reply.status >= 400:
        raise SystemExit(1)


def _pairs(raw: tuple[str, ...], sep: str, option: str, shape: str, *, unique: bool = True) -> Any:
    """`K:V` / `k=v` options as a dict (headers) or a list of pairs (a query may repeat)."""
    pairs = []
    for item in raw:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            raise click.BadParameter(f"{item!r} is not {shape}", param_hint=option)
        pairs.append((key.strip(), value.strip() if sep == ":" else value))
    return dict(pairs) if unique else pairs


def _print_queued(answer: dict[str, Any]) -> None:
    word = "Queued" if answer["status"] == "accepted" else "Already queued"
    click.echo(f"{word}: activation {answer['activation_id']}")
    click.echo(f"Follow it: fn activation {answer['activation_id']} --wait")


def _decoded_body(reply: Reply) -> Any:
    try:
        return reply.json()
    except ValueError:
        return reply.body.decode(errors="replace")


def _print_reply(name: str, reply: Reply) -> None:
    """The body as it came on success (bytes, not re-encoded); the error on stderr otherwise."""
    if reply.status < 400:
        body = reply.body
        if sys.stdout.isatty():  # (into a pipe or a file: the bytes as they came)
            body = shown(body.decode(errors="replace")).encode()
        sys.stdout.buffer.write(body)
        if not body.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        return
    activation = reply.headers.get("x-ember-activation-id")
    try:
        error = reply.json()["error"]
        message = error["message"]
        if error.get("type") and error.get("code") == "handler_error":
            message = f"{error['type']}: {message}"  # what the handler raised
    except (ValueError, KeyError, TypeError):
        message = reply.body.decode(errors="replace")
    suffix = (
        f" (activation {activation}; see: fn logs {name.split(':')[0]} --activation {activation})"
        if activation
        else ""
    )
    click.echo(shown(f"fn: HTTP {reply.status}: {message}{suffix}", err=True), err=True)


def _print_activation(a: dict[str, Any]) -> None:
    temp = "cold" if a["cold"] else "warm"
    click.echo(
        heading(
            f"--- {a['started_at'][:23]} {a['id']} v{a['version']} {a['status']} "
            f"HTTP {a['http_status']} {a['duration_ms']:.1f}ms {temp}"
        )
    )
    if a.get("error"):
        click.echo(shown(f"error: {a['error'].get('type', '')}: {a['error'].get('message', '')}"))
    if a.get("logs"):
        click.echo(shown(a["logs"].rstrip("\n")))


@click.command()
@click.argument("name", shell_complete=complete_function)
@click.option("--activation", "activation_id", help="Show this activation only.")
@click.option(
    "--since", help="Only activations newer than this, like 10m, 2h or 1d (default: the last -n)."
)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new activations as they happen (Ctrl-C)."
)
@click.option(
    "--limit",
    "-n",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many recent activations.",
)
@json_option
@click.pass_context
def logs(
    ctx: click.Context,
    name: str,
    activation_id: str | None,
    since: str | None,
    follow: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Show the logs of NAME's recent activations (oldest first), or of one activation;
    --follow streams new ones as they happen (with --json: one JSON object a line)."""
    if follow or since:
        window = quote(since or "1h")
        path = f"/v1/functions/{quote(name)}/logs?since={window}&limit={limit}"
        if follow:
            _follow(ctx, name, path + "&follow=1", as_json)
            return
        activations = api(ctx, "GET", path)["activations"]
    elif activation_id:
        activation = api(ctx, "GET", f"/v1/activations/{activation_id}")
        if activation["function"] != name:
            fail(f'activation {activation_id} belongs to "{activation["function"]}", not "{name}"')
        activations = [activation]
    else:
        activations = api(ctx, "GET", f"/v1/functions/{name}/activations?limit={limit}")[
            "activations"
        ][::-1]
    emit({"activations": activations}, as_json, lambda d: _print_logs(name, d["activations"]))


def _follow(ctx: click.Context, name: str, path: str, as_json: bool) -> None:
    """Print each activation the gateway streams (Server-Sent Events) until Ctrl-C."""
    if not as_json:
        click.echo(f"Following {name}'s activations (Ctrl-C to stop)...", err=True)
    try:
        for event, data in client(ctx).stream(path):
            if event != "activation":
                continue
            if as_json:
                click.echo(data)
            else:
                _print_activation(json.loads(data))
            sys.stdout.flush()
    except ClientError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return
    fail("the gateway ended the stream (it stopped or restarted); run the command again")


def _print_logs(name: str, activations: list[dict[str, Any]]) -> None:
    if not activations:
        click.echo(f"No activations of {name} yet; call it with: fn invoke {name}")
    for activation in activations:
        _print_activation(activation)


def print_delivery(d: dict[str, Any], *, verbose: bool = True) -> None:
    """An async call or event: status, attempts, error or result, logs (fn dlq show too)."""
    when = d["finished_at"] or d["started_at"] or d["created_at"]
    click.echo(
        heading(
            f"--- {d['id']} {d['function']} ({d['source']}) {d['status']} after "
            f"{d['attempts']} attempt(s), {(when or '')[:23]}"
        )
    )
    if d["status"] == "pending" and d.get("next_attempt_at"):
        click.echo(f"next attempt at {d['next_attempt_at'][:23]}")
    if d.get("error"):
        e = d["error"]
        click.echo(shown(f"error: {e.get('type', '')}: {e.get('message', '')}"))
        if e.get("dead_because"):
            click.echo(shown(f"dead-lettered: {e['dead_because']}"))
    if d.get("result") is not None:
        result = d["result"]
        click.echo(shown("result: " + (result if isinstance(result, str) else json.dumps(result))))
    if verbose and d.get("logs"):
        click.echo(shown(d["logs"].rstrip("\n")))


@click.command()
@click.argument("activation_id")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=None,
    is_flag=False,
    flag_value=60.0,
    help="Wait (default up to 60 s) until an async activation succeeds or is dead-lettered.",
)
@json_option
@click.pass_context
def activation(ctx: click.Context, activation_id: str, wait_s: float | None, as_json: bool) -> None:
    """Show one activation: status, attempts, result or error, and logs."""
    import time

    deadline = time.monotonic() + (wait_s or 0)
    while True:
        data = api(ctx, "GET", f"/v1/activations/{activation_id}")
        if (
            not data.get("async")
            or data["status"] in ("succeeded", "dead")
            or time.monotonic() >= deadline
        ):
            break
        time.sleep(0.1)
    emit(data, as_json, lambda d: print_delivery(d) if d.get("async") else _print_activation(d))
    if data["status"] in ("dead", "error", "timeout", "crashed", "start_failed"):
        raise SystemExit(1)
