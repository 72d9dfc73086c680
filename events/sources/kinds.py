"""The kinds of broker source, from a trigger request to a consumer.

A request (`POST /v1/functions/NAME/triggers`, as `fn trigger add` sends it) names one kind by
its key (`nats`, `rabbitmq`, `redis_stream`, `mqtt`, `kafka`) with that kind's options and an
optional `url`. `parse` checks them; `prepare` connects once and creates what the source needs
on the broker (a durable consumer, a consumer group, a persistent session, a binding) so that
messages published from then on wait for Ember even before a gateway consumes them, and
refuses a broker it cannot reach or a stream, queue or topic that does not exist.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

from events.sources.base import BadSource, BrokerUnavailable, Consumer
from events.sources.secrets import Cipher, mask_url, open_url
from store import Trigger

PREPARE_TIMEOUT_S = 10.0
_HERE = "events.sources"


@dataclass(slots=True, frozen=True)
class Kind:
    """A kind of broker source. Its module (and so its broker's client library, which takes
    a while to import) is imported on first use, not when the gateway starts."""

    name: str
    """The trigger's kind (and its deliveries' source)."""
    key: str
    """The request's key that names this kind (its value: what to consume)."""
    default_url: str
    schemes: tuple[str, ...]
    module: str
    consumer_class: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def options(self, what: str, body: Mapping[str, Any], default_name: str) -> dict[str, Any]:
        """The options stored for a request (BadSource when they are wrong)."""
        return cast(dict[str, Any], self.load().options(what, body, default_name))

    def describe(self, options: Mapping[str, Any]) -> str:
        return cast(str, self.load().describe(options))

    def consumer(self, trigger_id: int, options: Mapping[str, Any], url: str) -> Consumer:
        return cast(Consumer, getattr(self.load(), self.consumer_class)(trigger_id, options, url))


KINDS = {
    k.name: k
    for k in (
        Kind("nats", "nats", "nats://127.0.0.1:4222", ("nats", "tls"), f"{_HERE}.nats", "Jet"),
        Kind(
            "rabbitmq",
            "rabbitmq",
            "amqp://guest:guest@127.0.0.1:5672/",
            ("amqp", "amqps"),
            f"{_HERE}.rabbitmq",
            "Rabbit",
        ),
        Kind(
            "redis",
            "redis_stream",
            "redis://127.0.0.1:6379/0",
            ("redis", "rediss", "unix"),
            f"{_HERE}.redis_streams",
            "RedisStream",
        ),
        Kind("mqtt", "mqtt", "mqtt://127.0.0.1:1883", ("mqtt", "mqtts"), f"{_HERE}.mqtt", "Mqtt"),
        Kind("kafka", "kafka", "kafka://127.0.0.1:9092", ("kafka",), f"{_HERE}.kafka", "Kafka"),
    )
}
KEYS = {k.key: k for k in KINDS.values()}
_NAME_PART = re.compile(r"[^A-Za-z0-9_-]+")


def requested(body: Mapping[str, Any]) -> list[str]:
    """The broker keys a trigger request names."""
    return [key for key in KEYS if body.get(key) is not None]


@dataclass(slots=True, frozen=True)
class Wanted:
    """A broker trigger as asked for, checked: not stored yet."""

    function: str
    kind: str
    options: dict[str, Any]
    url: str | None
    """As given (None: the kind's default); seal it before storing."""


def parse(function: str, body: Mapping[str, Any]) -> Wanted:
    """Check a request for a broker trigger (exactly one key of KEYS). Raises BadSource."""
    (key,) = requested(body)
    kind = KEYS[key]
    what = str(body[key]).strip()
    if not what:
        raise BadSource(key, f"--{key.replace('_', '-')} needs a name")
    token = f"{_NAME_PART.sub('-', function)}-{uuid.uuid4().hex[:8]}"
    options = kind.options(what, body, f"ember-{token}")
    url = body.get("url") or body.get("bootstrap")
    if url is not None:
        url = str(url).strip()
        if kind.name == "kafka" and "://" not in url:
            url = f"kafka://{url}"
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in kind.schemes:
            raise BadSource(
                "url",
                f"--url {mask_url(url)!r} is not a {kind.name} URL: expected "
                f"{' or '.join(s + '://' for s in kind.schemes)}... like {kind.default_url}",
            )
    return Wanted(function, kind.name, options, url)


def url_of(trigger: Trigger, cipher: Cipher) -> str:
    """The URL a stored broker trigger connects to (its sealed one, opened, or the default)."""
    kind = KINDS[trigger.kind]
    return open_url(trigger.source_url, cipher) if trigger.source_url else kind.default_url


def consumer(trigger: Trigger, cipher: Cipher) -> Consumer:
    """A new consumer of a stored broker trigger."""
    url = url_of(trigger, cipher)
    return KINDS[trigger.kind].consumer(trigger.id, trigger.source_options, url)


def describe(trigger: Trigger, cipher: Cipher) -> dict[str, Any]:
    """What the API shows of a broker trigger: its options and its masked URL."""
    try:
        shown = mask_url(url_of(trigger, cipher))
    except Exception:  # sealed with another key: the source says so in the log, not here
        shown = "(sealed with another secrets key: add the trigger again)"
    return {
        **trigger.source_options,
        "source": KINDS[trigger.kind].describe(trigger.source_options),
        "url": shown,
    }


async def prepare(wanted: Wanted) -> None:
    """Connect once and create what the source needs on the broker. Raises BrokerUnavailable,
    SourceMissing or BadSource, saying what failed and what next."""
    kind = KINDS[wanted.kind]
    url = wanted.url or kind.default_url
    one = kind.consumer(0, wanted.options, url)
    try:
        async with asyncio.timeout(PREPARE_TIMEOUT_S):
            await one.open()
    except TimeoutError:
        raise BrokerUnavailable(
            f"{kind.name} at {mask_url(url)} did not answer within {PREPARE_TIMEOUT_S:g}s; "
            "check --url and that the broker runs"
        ) from None
    finally:
        try:
            async with asyncio.timeout(PREPARE_TIMEOUT_S):
                await one.close()
        except Exception:  # closing a half-open connection: nothing to keep
            pass
