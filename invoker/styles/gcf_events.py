"""The events Cloud Functions' event functions take, built from Ember's calls (for gcf.py).

Ember's events (a topic's message, a schedule firing, a table change) reach them as Pub/Sub
messages, the way Google delivers a topic's (and a Cloud Scheduler job's) messages:

    topic      projects/PROJECT/topics/TOPIC   (the Ember topic's name)
    schedule   projects/PROJECT/topics/ember.schedule   (the body: the schedule's JSON)
    table      projects/PROJECT/topics/ember.table      (the body: the row change's JSON)

PROJECT is the function's GOOGLE_CLOUD_PROJECT (--env), else "ember". The message's data is
the event's body in base64, its id the event's id (the same on every attempt), its publish
time when the event was submitted. A CloudEvent function gets a
google.cloud.pubsub.topic.v1.messagePublished CloudEvent (data: {"message": {...},
"subscription": "projects/PROJECT/subscriptions/FUNCTION"}); a background function gets the
message ({"@type", "data", "attributes"}) and a context of type google.pubsub.topic.publish.

An HTTP request to a background function carries its event as functions-framework reads it:
a JSON {"data": ..., "context": {"eventId", "timestamp", "eventType", "resource"}} (or those
keys at the top), a Pub/Sub push ({"subscription", "message"}), or a CloudEvent (binary mode:
ce-* headers; structured mode: application/cloudevents+json).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

import orjson

from invoker.styles import BadRequest, Incoming

PUBSUB_SERVICE = "pubsub.googleapis.com"
PUBSUB_MESSAGE = "type.googleapis.com/google.pubsub.v1.PubsubMessage"
PUBSUB_PUBLISH = "google.pubsub.topic.publish"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
_TOPIC_IN_PATH = re.compile(r"projects/[^/?]+/topics/[^/?]+")


class Context:
    """The `context` of a background function, as google.cloud.functions.Context has it."""

    __slots__ = ("event_id", "event_type", "resource", "timestamp")

    def __init__(
        self, eventId: str = "", timestamp: str = "", eventType: str = "", resource: Any = ""
    ) -> None:
        self.event_id = eventId
        self.timestamp = timestamp
        self.event_type = eventType
        self.resource = resource

    def __repr__(self) -> str:
        return (
            f"{{event_id: {self.event_id}, timestamp: {self.timestamp}, "
            f"event_type: {self.event_type}, resource: {self.resource}}}"
        )

    __str__ = __repr__


def topic_of(call: Incoming, project: str) -> str:
    """The Pub/Sub topic an Ember event stands for."""
    return f"projects/{project}/topics/{call.topic or 'ember.' + call.source}"


def event_time(call: Incoming) -> str:
    """When the event was submitted, RFC 3339 in UTC ("...Z")."""
    when = call.event_time
    if not when:
        return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return when[:-6] + "Z" if when.endswith("+00:00") else when


def cloud_event_parts(
    call: Incoming, project: str, function: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """(attributes, data) of the messagePublished CloudEvent an Ember event stands for."""
    event_id = call.event_id or call.context.activation_id
    when = event_time(call)
    attributes = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"//{PUBSUB_SERVICE}/{topic_of(call, project)}",
        "type": PUBSUB_PUBLISHED,
        "time": when,
        "datacontenttype": "application/json",
    }
    message = {
        "data": base64.b64encode(call.body).decode(),
        "attributes": {},
        "messageId": event_id,
        "message_id": event_id,
        "publishTime": when,
        "publish_time": when,
    }
    data = {"message": message, "subscription": f"projects/{project}/subscriptions/{function}"}
    return attributes, data


def background_of_event(call: Incoming, project: str) -> tuple[Any, Context]:
    """(data, context) of the Pub/Sub message an Ember event stands for."""
    data = {
        "@type": PUBSUB_MESSAGE,
        "data": base64.b64encode(call.body).decode(),
        "attributes": {},
    }
    resource = {"service": PUBSUB_SERVICE, "name": topic_of(call, project), "type": PUBSUB_MESSAGE}
    context = Context(
        call.event_id or call.context.activation_id, event_time(call), PUBSUB_PUBLISH, resource
    )
    return data, context


def background_of_request(call: Incoming) -> tuple[Any, Context]:
    """(data, context) of the event an HTTP request carries; BadRequest when it carries none."""
    ctype = call.content_type.split(";", 1)[0].strip().lower()
    if ctype != "application/cloudevents+json" and call.header("ce-specversion"):
        attributes = {
            k.lower()[3:]: v for k, v in call.headers if k.lower().startswith("ce-") and len(k) > 3
        }
        return _from_cloud_event(attributes, _body(call, ctype))
    try:
        body = orjson.loads(call.body) if call.body else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise BadRequest(
            "a background function takes a JSON event, like "
            '{"data": {...}, "context": {"eventId": "1", "eventType": "...", "resource": "..."}}'
            f"; got {call.content_type or 'no content type'} of {len(call.body)} bytes"
        )
    if ctype == "application/cloudevents+json" and "specversion" in body:
        data = body.pop("data", None)
        if "data_base64" in body:
            data = base64.b64decode(body.pop("data_base64"))
        return _from_cloud_event(body, data)
    message = body.get("message")
    if "context" not in body and "subscription" in body and isinstance(message, dict):
        return _from_push(message, call.path)
    fields = body["context"] if isinstance(body.get("context"), dict) else body
    context = Context(
        str(fields.get("eventId", "")),
        str(fields.get("timestamp", "")),
        str(fields.get("eventType", "")),
        fields.get("resource", ""),
    )
    return body.get("data", ""), context


def _body(call: Incoming, ctype: str) -> Any:
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            return orjson.loads(call.body)
        except orjson.JSONDecodeError:
            pass
    return call.body


def _from_cloud_event(attributes: dict[str, Any], data: Any) -> tuple[Any, Context]:
    source = str(attributes.get("source", ""))
    kind = str(attributes.get("type", ""))
    resource: Any = source + ("/" + attributes["subject"] if attributes.get("subject") else "")
    if kind == PUBSUB_PUBLISHED:
        if isinstance(data, dict) and isinstance(data.get("message"), dict):
            data = {
                k: v for k, v in data["message"].items() if k not in ("messageId", "publishTime")
            }
        kind = PUBSUB_PUBLISH
        name = source.split(PUBSUB_SERVICE + "/", 1)[-1]
        resource = {"service": PUBSUB_SERVICE, "name": name, "type": PUBSUB_MESSAGE}
    event_id, time = str(attributes.get("id", "")), str(attributes.get("time", ""))
    return data, Context(event_id, time, kind, resource)


def _from_push(message: dict[str, Any], path: str) -> tuple[Any, Context]:
    """A Pub/Sub push request's message, as functions-framework unwraps it."""
    match = _TOPIC_IN_PATH.search(path)
    context = Context(
        str(message.get("messageId", "")),
        str(message.get("publishTime") or dt.datetime.now(dt.UTC).isoformat()[:-6] + "Z"),
        PUBSUB_PUBLISH,
        {"service": PUBSUB_SERVICE, "type": PUBSUB_MESSAGE, "name": match[0] if match else ""},
    )
    data = {
        "@type": PUBSUB_MESSAGE,
        "data": message.get("data"),
        "attributes": message.get("attributes", {}),
    }
    return data, context
