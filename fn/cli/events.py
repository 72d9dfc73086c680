"""Events: publish to a topic, topics, triggers (topic, cron, table changes, broker sources),
and the dead letters of async calls and events."""

from __future__ import annotations

from typing import Any

import click

from fn.cli.activations import print_delivery
from fn.cli.api import CONTENT_TYPE_HELP, DATA_HELP, api, client, read_data
from fn.cli.output import emit, fail, json_option, print_table, wide_option
from fn.client import ClientError, error_message


@click.command()
@click.argument("topic")
@click.option("--data", "-d", help=DATA_HELP)
@click.option("--content-type", help=CONTENT_TYPE_HELP)
@click.option("--idempotency-key", help="A repeat with the same key is not published again.")
@json_option
@click.pass_context
def publish(
    ctx: click.Context,
    topic: str,
    data: str | None,
    content_type: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Publish an event to TOPIC: each subscribed function gets it (durably, at least once)."""
    body, content_type = read_data(data, content_type)
    headers = {"Content-Type": content_type or "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    try:
        reply = client(ctx).request("POST", f"/v1/events/{topic}", body, headers)
        answer = reply.json()
    except ClientError as exc:
        fail(str(exc))
    except ValueError:
        answer = {}
    if reply.status != 202:
        fail(error_message(reply.status, answer))
    emit(answer, as_json, _print_published)


def _print_published(answer: dict[str, Any]) -> None:
    word = "Published" if answer["status"] == "accepted" else "Already published"
    click.echo(f"{word} event {answer['event_id']} to {answer['deliveries']} subscriber(s).")


@click.group()
def topic() -> None:
    """Create, list and delete topics (fn publish sends to them)."""


@topic.command("create")
@click.argument("name")
@click.pass_context
def topic_create(ctx: click.Context, name: str) -> None:
    """Create topic NAME (like orders.created)."""
    data = api(ctx, "PUT", f"/v1/topics/{name}")
    click.echo(f"Created topic {name}." if data["created"] else f"Topic {name} already exists.")


@topic.command("list")
@wide_option
@json_option
@click.pass_context
def topic_list(ctx: click.Context, as_json: bool) -> None:
    """List topics with their number of subscribers."""
    emit(api(ctx, "GET", "/v1/topics"), as_json, _print_topics)


def _print_topics(data: dict[str, Any]) -> None:
    if not data["topics"]:
        click.echo("No topics yet; create one with: fn topic create orders.created")
        return
    print_table(
        ["TOPIC", "SUBSCRIBERS", "CREATED"],
        [(t["name"], t["subscribers"], t["created_at"][:19]) for t in data["topics"]],
    )


@topic.command("delete")
@click.argument("name")
@click.pass_context
def topic_delete(ctx: click.Context, name: str) -> None:
    """Delete topic NAME (it must have no subscribers)."""
    api(ctx, "DELETE", f"/v1/topics/{name}")
    click.echo(f"Deleted topic {name}.")


@click.group()
def trigger() -> None:
    """Run functions on events: topics, schedules, table changes, broker messages."""


def _describe_trigger(t: dict[str, Any]) -> str:
    if t["kind"] == "topic":
        return f"topic {t['topic']}"
    if t["kind"] == "cron":
        return f'cron "{t["cron"]}" {t["timezone"]}, next {(t["next_fire_at"] or "")[:19]}'
    if "source" in t:  # a broker's: its URL comes back masked
        return f"{t['source']} at {t['url']}"
    return f"table {t['table']} on {','.join(t['on'])} in {t['database']}"


def broker_options(command: Any) -> Any:
    """The options of broker triggers (fn trigger add)."""
    options = [
        click.option("--nats", help="Run NAME for each message on this NATS JetStream subject."),
        click.option("--stream", help="With --nats: the stream (default: the one holding it)."),
        click.option("--durable", help="With --nats: the durable consumer's name."),
        click.option("--rabbitmq", help="Run NAME for each message of this RabbitMQ queue."),
        click.option(
            "--exchange", help="With --rabbitmq: declare the queue and bind it to this exchange."
        ),
        click.option("--routing-key", help="With --exchange: the binding key (default: QUEUE)."),
        click.option("--redis-stream", help="Run NAME for each entry of this Redis stream."),
        click.option("--group", help="With --redis-stream or --kafka: the consumer group."),
        click.option("--mqtt", help="Run NAME for each message on this MQTT topic filter."),
        click.option("--qos", type=click.IntRange(0, 2), help="With --mqtt: 0, 1 (default) or 2."),
        click.option("--kafka", help="Run NAME for each record of this Kafka topic."),
        click.option(
            "--bootstrap",
            envvar="FN_KAFKA_BOOTSTRAP",
            show_envvar=True,
            help="With --kafka: HOST:PORT[,...] of the brokers.",
        ),
        click.option(
            "--url",
            envvar="FN_TRIGGER_URL",
            show_envvar=True,
            help="The broker's URL (nats://, amqp://, redis://, mqtt://), credentials included: "
            "kept as a secret, shown masked. Default: the broker on 127.0.0.1.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@trigger.command("add")
@click.argument("name")
@click.option("--topic", "topic_name", help="Run NAME for each event published to this topic.")
@click.option(
    "--cron", help='Run NAME on a schedule, like "*/5 * * * *" (a sixth field adds seconds).'
)
@click.option(
    "--timezone", default="UTC", show_default=True, help="Time zone of --cron, like Europe/Paris."
)
@click.option("--table", help="Run NAME for each change of this table (SCHEMA.TABLE).")
@click.option(
    "--on",
    "operations",
    default="insert,update,delete",
    show_default=True,
    help="With --table: which changes.",
)
@click.option(
    "--database",
    envvar="FN_TRIGGER_DATABASE",
    show_envvar=True,
    help="With --table: the watched database's URL (kept as a secret). "
    "Default: Ember's own database.",
)
@broker_options
@json_option
@click.pass_context
def trigger_add(
    ctx: click.Context,
    /,
    name: str,
    topic_name: str | None,
    cron: str | None,
    timezone: str,
    table: str | None,
    operations: str,
    database: str | None,
    as_json: bool,
    **broker: Any,
) -> None:
    """Add a trigger to function NAME: --topic, --cron, --table, or a broker's messages:
    --nats, --rabbitmq, --redis-stream, --mqtt or --kafka (each message a durable delivery,
    acknowledged to the broker once committed; see docs/events.md)."""
    body: dict[str, Any] = {k: v for k, v in broker.items() if v is not None}
    if topic_name is not None:
        body["topic"] = topic_name
    if cron is not None:
        body.update(cron=cron, timezone=timezone)
    if table is not None:
        body.update(table=table, on=operations, database=database)
    data = api(ctx, "POST", f"/v1/functions/{name}/triggers", body)
    emit(
        data,
        as_json,
        lambda t: click.echo(f"Added trigger {t['id']}: {name} runs on {_describe_trigger(t)}."),
    )


@trigger.command("list")
@wide_option
@click.argument("name", required=False)
@json_option
@click.pass_context
def trigger_list(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List triggers (of function NAME, or all) of the namespace (the admin token: of all)."""
    data = api(ctx, "GET", "/v1/triggers" + (f"?function={name}" if name else ""))
    emit(data, as_json, _print_triggers)


def _print_triggers(data: dict[str, Any]) -> None:
    if not data["triggers"]:
        click.echo(
            "No triggers; add one with: fn trigger add NAME --topic T | --cron EXPR | --table T "
            "| --nats SUBJECT | --rabbitmq QUEUE | --redis-stream KEY | --mqtt TOPIC | --kafka T"
        )
        return
    print_table(
        ["ID", "NAMESPACE", "FUNCTION", "KIND", "WHAT"],
        [
            (t["id"], t["namespace"], t["function"], t["kind"], _describe_trigger(t))
            for t in data["triggers"]
        ],
    )


@trigger.command("delete")
@click.argument("trigger_id", type=int)
@click.option(
    "--force",
    is_flag=True,
    help="Forget a table trigger even when its database "
    "cannot be reached (what it installed there then stays).",
)
@click.pass_context
def trigger_delete(ctx: click.Context, trigger_id: int, force: bool) -> None:
    """Delete trigger ID (a table trigger is uninstalled from its database)."""
    api(ctx, "DELETE", f"/v1/triggers/{trigger_id}" + ("?force=1" if force else ""))
    click.echo(f"Deleted trigger {trigger_id}.")


@click.group()
def dlq() -> None:
    """Inspect and resend dead-lettered async calls and events."""


@dlq.command("list")
@wide_option
@click.argument("name", required=False)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@click.pass_context
def dlq_list(ctx: click.Context, name: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first (of function NAME, or all)."""
    query = f"?limit={limit}" + (f"&function={name}" if name else "")
    emit(api(ctx, "GET", "/v1/dlq" + query), as_json, _print_dead_letters)


def _print_dead_letters(data: dict[str, Any]) -> None:
    if not data["dead"]:
        click.echo("No dead letters.")
        return
    print_table(
        ["ID", "FUNCTION", "SOURCE", "ATTEMPTS", "ERROR", "DEAD SINCE"],
        [
            (
                d["id"],
                d["function"],
                d["source"],
                d["attempts"],
                _error_summary(d["error"]),
                (d["finished_at"] or "")[:19],
            )
            for d in data["dead"]
        ],
    )


@dlq.command("show")
@click.argument("activation_id")
@json_option
@click.pass_context
def dlq_show(ctx: click.Context, activation_id: str, as_json: bool) -> None:
    """Show a dead letter: its error, the last attempt's logs."""
    emit(api(ctx, "GET", f"/v1/activations/{activation_id}"), as_json, print_delivery)


@dlq.command("redrive")
@click.argument("activation_ids", nargs=-1)
@click.option("--function", "function", help="Resend every dead letter of this function.")
@click.pass_context
def dlq_redrive(ctx: click.Context, activation_ids: tuple[str, ...], function: str | None) -> None:
    """Resend dead letters (by id, or all of --function) with a fresh count of attempts."""
    if not activation_ids and not function:
        raise click.UsageError("give activation ids, or --function NAME")
    data = api(ctx, "POST", "/v1/dlq/redrive", {"ids": list(activation_ids), "function": function})
    click.echo(f"Resent {len(data['redriven'])} dead letter(s).")


def _error_summary(error: dict[str, Any] | None) -> str:
    """A dead letter's error in one table cell."""
    error = error or {}
    return f"{error.get('type', '')}: {error.get('message', '')}"[:60]
