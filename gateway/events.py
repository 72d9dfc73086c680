"""The admin API of events: topics, publishing, triggers, async activations, the dead letters.

POST   /v1/events/{topic}             publish (202 once committed; Idempotency-Key honoured)
GET    /v1/topics                     PUT/DELETE /v1/topics/{name}
GET    /v1/triggers[?function=NAME]
POST   /v1/functions/{name}/triggers  DELETE /v1/triggers/{id}
GET    /v1/dlq[?function=&limit=]     POST /v1/dlq/redrive {"ids": [...]} or {"function": NAME}
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from config.units import ConfigError
from events.sources import kinds as source_kinds
from events.sources.base import BadSource, SourceError, SourceMissing
from events.triggers import next_tick, parse_schedule
from gateway import schemas as api
from gateway.api_spec import operation
from gateway.auth import may_see, principal_of, scoped
from gateway.errors import bad_request, error_response, json_response
from gateway.invoke import MAX_IDEMPOTENCY_KEY
from gateway.namespaces import qualify_topic, split_name, split_topic
from gateway.requests import json_body, limit_of, not_found, platform_of
from gateway.vault import SecretError
from gateway.views import trigger_json
from store import (
    ActivationId,
    DatabaseUnavailable,
    Delivery,
    Event,
    FunctionNotFound,
    NotFound,
    TopicNotFound,
    Trigger,
    TriggerError,
    new_id,
)
from store.outbox import OPERATIONS

log = logging.getLogger("ember.gateway.events")
routes = web.RouteTableDef()
TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
TABLE = re.compile(r'^("?[A-Za-z_][A-Za-z0-9_$]*"?\.)?"?[A-Za-z_][A-Za-z0-9_$]*"?$')


def _topic_name(raw: str, namespace: str) -> str:
    """A topic name given by a request, checked, as stored in `namespace`."""
    if not TOPIC.match(raw):
        raise bad_request(
            "bad_topic",
            f"invalid topic name {raw!r}: use 1-200 letters, digits, "
            ". _ and -, starting with a letter or digit (like orders.created)",
        )
    return qualify_topic(namespace, raw)


def _topicnot_found(name: str) -> web.Response:
    name = split_topic(name)[1]
    return error_response(
        404, "topic_not_found", f'topic "{name}" not found; create it with: fn topic create {name}'
    )


# -- topics and publishing --------------------------------------------------------------------


@routes.put("/v1/topics/{name}")
@operation(
    "events",
    "Create a topic (idempotent)",
    responses={200: api.TopicCreated, 201: api.TopicCreated},
)
async def create_topic(request: web.Request) -> web.Response:
    name = _topic_name(request.match_info["name"], principal_of(request).namespace)
    created = await platform_of(request).store.create_topic(name)
    return json_response(
        {"topic": split_topic(name)[1], "created": created}, status=201 if created else 200
    )


@routes.get("/v1/topics")
@operation("events", "List topics", responses={200: api.TopicList})
async def list_topics(request: web.Request) -> web.Response:
    topics = await platform_of(request).store.list_topics()
    namespace = principal_of(request).namespace
    return json_response(
        {
            "topics": [
                {
                    "name": split_topic(t.name)[1],
                    "subscribers": t.subscribers,
                    "created_at": t.created_at.isoformat(),
                }
                for t in topics
                if split_topic(t.name)[0] == namespace
            ]
        }
    )


@routes.delete("/v1/topics/{name}")
@operation("events", "Delete a topic without triggers", responses={200: api.Deleted})
async def delete_topic(request: web.Request) -> web.Response:
    # (checked like any topic name: `team-a%2Forders` is not a topic of `default`)
    name = _topic_name(request.match_info["name"], principal_of(request).namespace)
    try:
        await platform_of(request).store.delete_topic(name)
    except TopicNotFound:
        return _topicnot_found(name)
    except TriggerError as exc:
        return error_response(409, "topic_in_use", str(exc))
    return json_response({"deleted": split_topic(name)[1]})


@routes.post("/v1/events/{topic}")
@operation(
    "events",
    "Publish an event (the body) to a topic",
    headers={"Idempotency-Key": "a repeat with the same key is not published again"},
    responses={202: api.Published},
)
async def publish(request: web.Request) -> web.Response:
    """Commit one delivery per subscriber, then answer 202."""
    platform = platform_of(request)
    topic = _topic_name(request.match_info["topic"], principal_of(request).namespace)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise bad_request(
            "bad_idempotency_key", f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters"
        )
    event = Event(
        new_id(),
        topic,
        await request.read(),
        request.headers.get("Content-Type", "application/json"),
    )
    try:
        if key is None:  # shares a statement with concurrent publishes
            deliveries, created = await platform.events.publisher.submit(event), True
            event_id = event.id
        else:
            event_id, deliveries, created = await platform.store.publish(
                event, key, notify=platform.events.must_notify()
            )
            platform.events.wake_deliveries()
    except TopicNotFound:
        return _topicnot_found(topic)
    return json_response(
        {
            "event_id": str(event_id),
            "topic": split_topic(topic)[1],
            "deliveries": deliveries,
            "status": "accepted" if created else "duplicate",
        },
        status=202,
    )


MAX_BATCH = 500


@routes.post("/v1/events")
@operation(
    "events",
    "Publish a batch of events, all or nothing",
    body=list[api.BatchEvent],
    responses={202: api.PublishedBatch},
)
async def publish_batch(request: web.Request) -> web.Response:
    """Publish a batch: `[{"topic": T, "data": JSON}, ...]` (up to MAX_BATCH), committed all
    or nothing; each event's body is its `data` as JSON."""
    platform = platform_of(request)
    try:
        items = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise bad_request("bad_json", f"request body is not JSON: {exc}") from None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise bad_request(
            "bad_batch",
            f"send a JSON array of 1-{MAX_BATCH} events like "
            '{"topic": "orders.created", "data": {...}}',
        )
    if request.headers.get("Idempotency-Key") is not None:
        raise bad_request(
            "bad_batch",
            "a batch takes no Idempotency-Key: publish events "
            "that need one one at a time (POST /v1/events/TOPIC)",
        )
    events = []
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("topic"), str)
            or "data" not in item
            or set(item) - {"topic", "data"}
        ):
            raise bad_request("bad_batch", f'event {i} must be {{"topic": T, "data": ...}}')
        topic = _topic_name(item["topic"], principal_of(request).namespace)
        events.append(Event(new_id(), topic, orjson.dumps(item["data"])))
    try:
        counts = await platform.store.publish_batch(events, notify=platform.events.must_notify())
    except TopicNotFound as exc:
        return _topicnot_found(exc.name)
    platform.events.wake_deliveries()
    return json_response(
        {
            "events": [
                {
                    "event_id": str(e.id),
                    "topic": split_topic(e.topic)[1],
                    "deliveries": counts[e.id],
                    "status": "accepted",
                }
                for e in events
            ]
        },
        status=202,
    )


# -- triggers ---------------------------------------------------------------------------------


def _one_kind(body: dict[str, Any]) -> str:
    kinds = [k for k in ("topic", "cron", "table") if body.get(k) is not None]
    kinds += source_kinds.requested(body)
    if len(kinds) != 1:
        raise bad_request(
            "bad_trigger",
            "give exactly one of --topic, --cron, --table, --nats, --rabbitmq, --redis-stream, "
            "--mqtt or --kafka",
        )
    return kinds[0]


def _trigger_from_body(name: str, body: dict[str, Any]) -> Trigger:
    kind = _one_kind(body)
    if kind == "topic":
        topic = _topic_name(str(body["topic"]), split_name(name)[0])
        return Trigger(id=0, function=name, kind="topic", topic=topic)
    if kind == "cron":
        try:
            cron, zone = parse_schedule(str(body["cron"]), str(body.get("timezone") or "UTC"))
        except ConfigError as exc:
            raise bad_request("bad_schedule", str(exc), setting=exc.setting) from None
        first = next_tick(cron, zone, dt.datetime.now(dt.UTC))
        return Trigger(
            id=0, function=name, kind="cron", cron=cron, timezone=zone.key, next_fire_at=first
        )
    table = str(body["table"]).strip()
    if not TABLE.match(table):
        raise bad_request("bad_table", f"invalid table {table!r}: expected TABLE or SCHEMA.TABLE")
    raw_ops = body.get("on") or ["insert", "update", "delete"]
    ops = raw_ops.split(",") if isinstance(raw_ops, str) else raw_ops
    ops = [str(op).strip().lower() for op in ops]
    if not ops or any(op not in OPERATIONS for op in ops):
        raise bad_request(
            "bad_operations",
            f"--on takes a comma-separated list of {', '.join(OPERATIONS)}; got {','.join(ops)!r}",
        )
    database = body.get("database")
    if database is not None:
        database = str(database)
        if urlsplit(database).scheme not in ("postgres", "postgresql"):
            raise bad_request("bad_database", "--database must be a postgresql://USER@HOST/DB URL")
    return Trigger(
        id=0,
        function=name,
        kind="table",
        table_name=table,
        operations=tuple(dict.fromkeys(ops)),
        database_url=database,
    )


def _own_database_refusal(request: web.Request, trigger: Trigger) -> web.Response | None:
    """A table trigger on Ember's own database sees every namespace's rows: only the admin
    may add one, and on no table of Ember's own (its activations, deliveries, keys, secrets;
    a trigger on the delivery queue would also feed itself)."""
    if trigger.kind != "table" or trigger.database_url is not None:
        return None
    assert trigger.table_name is not None
    if any(p.strip('"').lower().startswith("ember_") for p in trigger.table_name.split(".")):
        return error_response(
            403, "forbidden", f"{trigger.table_name} is one of Ember's own tables: not watchable"
        )
    if not principal_of(request).is_admin:
        return error_response(
            403,
            "forbidden",
            "a table trigger on Ember's own database needs the admin token (it holds every "
            "namespace's data); give your database: --database postgresql://...",
            needs="admin",
        )
    return None


@routes.post("/v1/functions/{name}/triggers")
@operation(
    "triggers",
    "Add a trigger: a topic, a schedule or a table",
    body=api.TriggerRequest,
    responses={201: api.TriggerJSON},
)
async def add_trigger(request: web.Request) -> web.Response:
    platform = platform_of(request)
    name = request.match_info["name"]
    body = await json_body(request)
    if _one_kind(body) in source_kinds.KEYS:
        return await _add_source(request, name, body)
    wanted = _trigger_from_body(name, body)
    refusal = _own_database_refusal(request, wanted)
    if refusal is not None:
        return refusal
    try:
        trigger = await platform.store.add_trigger(wanted)
    except FunctionNotFound:
        return not_found(name)
    except TopicNotFound as exc:
        return error_response(404, "topic_not_found", str(exc))
    except TriggerError as exc:
        return error_response(409, "trigger_exists", str(exc))
    if trigger.kind == "table":
        try:
            trigger = await platform.events.install(trigger)
        except TriggerError as exc:
            return error_response(400, "bad_table", str(exc))
    platform.events.triggers_changed()
    return json_response(trigger_json(trigger, platform.vault), status=201)


async def _add_source(request: web.Request, name: str, body: dict[str, Any]) -> web.Response:
    """A broker trigger: checked, prepared on the broker (refused when it cannot be reached or
    what it names does not exist), then stored."""
    platform = platform_of(request)
    try:
        wanted = source_kinds.parse(name, body)
        trigger = await platform.events.add_source(wanted)
    except FunctionNotFound:
        return not_found(name)
    except BadSource as exc:
        return error_response(400, "bad_source", str(exc), setting=exc.setting)
    except SourceMissing as exc:
        return error_response(400, "source_not_found", str(exc))
    except SourceError as exc:
        return error_response(400, "broker_unavailable", str(exc))
    except SecretError as exc:  # no secrets key to seal the URL with
        return error_response(503, "secrets_unavailable", str(exc))
    return json_response(trigger_json(trigger, platform.vault), status=201)


@routes.get("/v1/triggers")
@operation("triggers", "List triggers", query=api.TriggersQuery, responses={200: api.TriggerList})
async def list_triggers(request: web.Request) -> web.Response:
    function = scoped(request, request.query.get("function") or None)
    platform = platform_of(request)
    triggers = await platform.store.list_triggers(function)
    shown = [trigger_json(t, platform.vault) for t in triggers if may_see(request, t.function)]
    return json_response({"triggers": shown})


@routes.delete("/v1/triggers/{id}")
@operation(
    "triggers",
    "Delete a trigger",
    query=api.DeleteTriggerQuery,
    responses={200: api.TriggerDeleted},
)
async def delete_trigger(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise bad_request("bad_trigger_id", f'"{raw}" is not a trigger id (see fn trigger list)')
    platform = platform_of(request)
    force = request.query.get("force") in ("1", "true", "yes")
    try:
        trigger = await platform.store.get_trigger(int(raw))
        if not may_see(request, trigger.function):  # another namespace's: as if none
            raise NotFound(f"trigger {raw} not found")
        await platform.events.remove(trigger, force=force)
    except NotFound as exc:
        return error_response(404, "trigger_not_found", str(exc))
    except (DatabaseUnavailable, TriggerError) as exc:
        return error_response(
            503,
            "watched_database_unavailable",
            f"cannot uninstall trigger {raw} from its database ({exc}); retry, or forget it "
            f"with: fn trigger delete {raw} --force (what it installed then stays there)",
        )
    platform.events.triggers_changed()
    return json_response({"deleted": trigger_json(trigger, platform.vault)})


# -- async activations and dead letters -------------------------------------------------------


def _result_json(delivery: Delivery) -> Any:
    if delivery.result is None:
        return None
    kind = (delivery.result_type or "").split(";")[0].strip()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return orjson.loads(delivery.result)
        except orjson.JSONDecodeError:
            pass
    try:
        return delivery.result.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(delivery.result).decode()}


def delivery_json(delivery: Delivery, *, payload: bool = False) -> api.DeliveryJSON:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    out: api.DeliveryJSON = {
        "id": str(delivery.id),
        "async": True,
        "function": split_name(delivery.function)[1],
        "namespace": split_name(delivery.function)[0],
        "version": delivery.version,
        "source": delivery.source,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "redeliveries": delivery.redeliveries,
        "redrives": delivery.redrives,
        "created_at": iso(delivery.created_at),
        "started_at": iso(delivery.started_at),
        "finished_at": iso(delivery.finished_at),
        "next_attempt_at": iso(delivery.run_at) if delivery.status == "pending" else None,
        "http_status": delivery.http_status,
        "result": _result_json(delivery),
        "error": delivery.error,
        "logs": delivery.logs,
        "last_activation": str(delivery.last_activation) if delivery.last_activation else None,
        "trigger_id": delivery.trigger_id,
        "event_id": str(delivery.event_id) if delivery.event_id else None,
        "idempotency_key": delivery.idempotency_key,
    }
    if payload:
        try:
            out["payload"] = delivery.payload.decode()
        except UnicodeDecodeError:
            out["payload"] = {"base64": base64.b64encode(delivery.payload).decode()}
    return out


@routes.get("/v1/dlq")
@operation("events", "List dead letters", query=api.DeadQuery, responses={200: api.DeadList})
async def list_dead(request: web.Request) -> web.Response:
    function = scoped(request, request.query.get("function") or None)
    principal = principal_of(request)
    dead = await platform_of(request).store.list_dead(
        function,
        limit=limit_of(request),
        namespace=None if principal.is_admin else principal.namespace,  # (the limit: its own)
    )
    return json_response({"dead": [delivery_json(d) for d in dead if may_see(request, d.function)]})


@routes.post("/v1/dlq/redrive")
@operation(
    "events", "Send dead letters again", body=api.RedriveRequest, responses={200: api.Redriven}
)
async def redrive(request: web.Request) -> web.Response:
    body = await json_body(request)
    raw_ids, function = body.get("ids") or [], body.get("function")
    if not isinstance(raw_ids, list) or (function is not None and not isinstance(function, str)):
        raise bad_request("bad_redrive", 'send {"ids": [ID, ...]} or {"function": NAME}')
    if not raw_ids and function is None:
        raise bad_request("bad_redrive", "name the dead deliveries to resend: ids or a function")
    try:
        ids = [ActivationId(uuid.UUID(str(i))) for i in raw_ids]
    except ValueError:
        raise bad_request("bad_activation_id", "ids must be activation ids (fn dlq list)") from None
    store = platform_of(request).store
    ids = [i for i in ids if (d := await store.get_delivery(i)) and may_see(request, d.function)]
    if not ids and function is None:
        return json_response({"redriven": []})  # (none of the request's namespace)
    redriven = await store.redrive(ids, scoped(request, function))
    return json_response({"redriven": [str(i) for i in redriven]})
