"""What every broker source is made of: the message as a source hands it over (`Received`),
the consumer each broker module provides (`Consumer`), the errors, and how a message becomes a
delivery (`to_delivery`).

    SourceError
     ├── BadSource          the trigger's options or URL are wrong (refused at `fn trigger add`)
     ├── SourceMissing      the stream, queue or topic does not exist on the broker
     └── BrokerUnavailable  the broker cannot be reached or refused us (the runner retries)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from store import Trigger, new_id
from store.sources import SourceMessage


class SourceError(Exception):
    """A broker source cannot be used as asked; the message says what and what next."""


class BadSource(SourceError, ValueError):
    """The options or the URL of a broker trigger are wrong."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class SourceMissing(SourceError, LookupError):
    """The stream, queue, exchange or topic to consume does not exist."""


class BrokerUnavailable(SourceError, ConnectionError):
    """The broker cannot be reached, or refused the connection (credentials, vhost)."""


@dataclass(slots=True, kw_only=True)
class Received:
    """One message taken from a broker and not yet acknowledged to it."""

    payload: bytes
    topic: str
    """Where it came from: the subject, routing key, stream key or topic (`context` shows it
    as the event's topic)."""
    key: str | None = None
    """The broker's stable id of the message, when it has one (stream sequence, entry id,
    partition and offset): a message given again is then not delivered twice."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """The message's own headers (or properties, or user properties), as strings."""
    info: dict[str, Any] = field(default_factory=dict)
    """The broker's metadata of the message (subject, stream sequence, routing key,
    offset...): the handler's `context.message`."""
    content_type: str = ""
    handle: Any = None
    """The client's own message object, for the acknowledgement."""


class Consumer(Protocol):
    """One broker source's connection, owned by its runner (`events/sources/runner.py`)."""

    async def open(self) -> None:
        """Connect and bind to what the trigger consumes. Raises BrokerUnavailable or
        SourceMissing (and BadSource for options the broker refuses)."""

    async def fetch(self, max_messages: int, wait_s: float) -> list[Received]:
        """Up to `max_messages` messages, waiting up to `wait_s` for the first one."""

    async def ack(self, messages: list[Received]) -> None:
        """Tell the broker these messages are taken (after Ember committed them)."""

    async def lag(self) -> int | None:
        """Messages waiting on the broker for this source (None: the broker cannot say)."""

    async def close(self) -> None:
        """Disconnect; what was fetched and not acknowledged goes back to the broker."""


def to_delivery(trigger: Trigger, message: Received) -> SourceMessage:
    """The delivery a message becomes: its payload as the event, its metadata in the meta the
    handler's context is built from."""
    meta: dict[str, Any] = {
        "method": "POST",
        "path": "/",
        "query": "",
        "content_type": message.content_type or guess_content_type(message.payload),
        "headers": [("X-Ember-Source", trigger.kind), *message.headers],
        "topic": message.topic,
        "message": {"broker": trigger.kind, "trigger": trigger.id, **message.info},
    }
    return SourceMessage(id=new_id(), payload=message.payload, key=message.key, meta=meta)


def guess_content_type(payload: bytes) -> str:
    """JSON when the payload is a JSON object or array (the handler then gets it decoded),
    else bytes."""
    if payload.lstrip()[:1] in (b"{", b"["):
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass
        else:
            return "application/json"
    return "application/octet-stream"


def text_headers(headers: Mapping[Any, Any] | None) -> list[tuple[str, str]]:
    """A client's headers as (name, value) strings; bytes are decoded, lists repeated."""
    out: list[tuple[str, str]] = []
    for name, value in (headers or {}).items():
        values = value if isinstance(value, list | tuple) else [value]
        for one in values:
            text = one.decode(errors="replace") if isinstance(one, bytes) else str(one)
            out.append((str(name), text))
    return out
