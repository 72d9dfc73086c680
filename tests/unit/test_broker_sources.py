"""Broker sources without a broker: trigger requests checked, URLs sealed and masked, messages
turned into deliveries, and the runner's order (commit, then ack), back-pressure and reconnects
with a fake consumer and a fake store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet

from events.settings import EventSettings
from events.sources import kinds
from events.sources.base import BadSource, BrokerUnavailable, Received, to_delivery
from events.sources.runner import SourceRunner
from events.sources.secrets import mask_url, open_url, seal_url
from gateway.vault import SecretError, Vault
from store import Store, Trigger
from store.sources import SourceMessage


def test_a_request_names_one_broker_and_its_options() -> None:
    nats = kinds.parse("on-order", {"nats": "orders.>", "stream": "ORDERS"})
    assert nats.kind == "nats"
    assert nats.options["subject"] == "orders.>"
    assert nats.options["stream"] == "ORDERS"
    assert nats.options["durable"].startswith("ember-on-order-")
    assert nats.url is None
    rabbit = kinds.parse("f", {"rabbitmq": "q", "exchange": "shop"})
    assert rabbit.options == {"queue": "q", "exchange": "shop", "routing_key": "q"}
    redis = kinds.parse("f", {"redis_stream": "s", "group": "g", "url": "redis://:pw@h:6379/1"})
    assert redis.options == {"stream": "s", "group": "g"}
    assert redis.url == "redis://:pw@h:6379/1"
    mqtt = kinds.parse("f", {"mqtt": "sensors/+/t"})
    assert mqtt.options["qos"] == 1
    kafka = kinds.parse("f", {"kafka": "t", "group": "g", "bootstrap": "k1:9092,k2:9092"})
    assert kafka.url == "kafka://k1:9092,k2:9092"


@pytest.mark.parametrize(
    ("body", "setting"),
    [
        ({"nats": "x", "url": "http://127.0.0.1:4222"}, "url"),
        ({"rabbitmq": "q", "url": "redis://127.0.0.1"}, "url"),
        ({"nats": "x", "durable": "a.b"}, "durable"),
        ({"mqtt": "a/#/b"}, "mqtt"),
        ({"mqtt": "a/b+"}, "mqtt"),
        ({"mqtt": "a", "qos": 3}, "qos"),
        ({"kafka": "t"}, "group"),
        ({"redis_stream": "  "}, "redis_stream"),
    ],
)
def test_bad_requests_say_which_setting(body: dict[str, Any], setting: str) -> None:
    with pytest.raises(BadSource) as caught:
        kinds.parse("f", body)
    assert caught.value.setting == setting


def test_urls_are_shown_without_passwords() -> None:
    assert mask_url("amqp://app:s3cret@mq:5672/prod") == "amqp://app:***@mq:5672/prod"
    assert mask_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url("nats://token@n:4222") == "nats://***@n:4222"
    assert mask_url("mqtt://h:1883?password=x&a=b") == "mqtt://h:1883?password=***&a=b"
    assert mask_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_urls_are_sealed_with_the_secrets_key() -> None:
    vault, other = Vault(Fernet.generate_key()), Vault(Fernet.generate_key())
    url = "amqp://app:s3cret@mq:5672/prod"
    sealed = seal_url(url, vault)
    assert "s3cret" not in sealed
    assert "mq:5672" not in sealed
    assert open_url(sealed, vault) == url
    with pytest.raises(SecretError, match="cannot be decrypted"):
        open_url(sealed, other)
    with pytest.raises(SecretError, match="EMBER_SECRETS_KEY"):  # no key: nothing sealed
        seal_url(url, Vault(None))
    # A trigger sealed with another key is shown as such, not as an error of the listing.
    trigger = Trigger(
        id=1, function="f", kind="rabbitmq", source_options={"queue": "q"}, source_url=sealed
    )
    assert kinds.describe(trigger, vault)["url"] == "amqp://app:***@mq:5672/prod"
    assert "another secrets key" in kinds.describe(trigger, other)["url"]


def test_a_message_becomes_a_delivery_with_its_metadata() -> None:
    trigger = Trigger(id=7, function="f", kind="nats")
    message = Received(
        payload=b'{"a": 1}',
        topic="orders.created",
        key="42",
        headers=[("Trace", "t1")],
        info={"stream_seq": 42},
    )
    delivery = to_delivery(trigger, message)
    assert delivery.key == "42"
    assert delivery.meta["content_type"] == "application/json"
    assert delivery.meta["topic"] == "orders.created"
    assert delivery.meta["message"] == {"broker": "nats", "trigger": 7, "stream_seq": 42}
    assert ("X-Ember-Source", "nats") in delivery.meta["headers"]
    assert ("Trace", "t1") in delivery.meta["headers"]
    # Bytes that only look like JSON are given as bytes.
    broken = to_delivery(trigger, Received(payload=b"{not json", topic="t"))
    assert broken.meta["content_type"] == "application/octet-stream"


class FakeConsumer:
    def __init__(self, log: list[str], batches: list[list[Received]], fail_open: int) -> None:
        self.log, self.batches, self.fail_open = log, batches, fail_open
        self.all_acked = asyncio.Event()

    async def open(self) -> None:
        if self.fail_open > 0:
            self.fail_open -= 1
            self.log.append("open failed")
            raise BrokerUnavailable("not yet")
        self.log.append("open")

    async def fetch(self, max_messages: int, wait_s: float) -> list[Received]:
        if not self.batches:
            await asyncio.sleep(wait_s)
            return []
        batch = self.batches.pop(0)[:max_messages]
        self.log.append(f"fetch {len(batch)}")
        return batch

    async def ack(self, messages: list[Received]) -> None:
        self.log.append(f"ack {len(messages)}")
        if not self.batches:
            self.all_acked.set()

    async def lag(self) -> int | None:
        return len(self.batches)

    async def close(self) -> None:
        self.log.append("close")


class FakeStore:
    def __init__(self, log: list[str], waiting: list[int]) -> None:
        self.log, self.waiting = log, waiting

    async def source_backlog(self, trigger: Trigger, limit: int) -> int:
        return self.waiting.pop(0) if self.waiting else 0

    async def enqueue_messages(
        self, trigger: Trigger, messages: Sequence[SourceMessage], *, notify: bool = True
    ) -> int:
        self.log.append(f"commit {len(messages)}")
        return len([m for m in messages if m.key != "dup"])


async def test_the_runner_commits_before_it_acks_pauses_and_reconnects() -> None:
    log: list[str] = []
    batches = [[Received(payload=b"x", topic="t", key=str(i)) for i in range(3)]]
    batches.append([Received(payload=b"y", topic="t", key="dup")])
    consumer = FakeConsumer(log, batches, fail_open=2)
    # Full backlog twice (paused), then room.
    store = FakeStore(log, [10, 10, 0, 0])
    settings = EventSettings(source_max_backlog=10, poll_s=0.001, source_reconnect_max_s=0.01)
    runner = SourceRunner(
        Trigger(id=1, function="f", kind="redis"),
        lambda: consumer,
        cast(Store, store),
        settings,
        wake=lambda: log.append("wake"),
        must_notify=lambda: False,
    )
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(5):
            await consumer.all_acked.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert log[:4] == ["open failed", "close", "open failed", "close"]
    assert log[4:] == ["open", "fetch 3", "commit 3", "wake", "ack 3", "fetch 1", "commit 1",
                       "wake", "ack 1", "close"]  # fmt: skip
    assert runner.stats.reconnects == 2
    assert runner.stats.messages == 3
    assert runner.stats.duplicates == 1


async def test_a_url_that_cannot_be_opened_is_retried_not_fatal() -> None:
    """The consumer is made (its sealed URL opened) inside the reconnect loop: a key that
    cannot open it is logged and retried with back-off, the runner does not die."""
    log: list[str] = []
    consumer = FakeConsumer(log, [[Received(payload=b"x", topic="t", key="1")]], fail_open=0)
    made = 0

    def make() -> FakeConsumer:
        nonlocal made
        made += 1
        if made == 1:
            raise SecretError("a sealed value cannot be decrypted with this platform's key")
        return consumer

    settings = EventSettings(poll_s=0.001, source_reconnect_max_s=0.01)
    runner = SourceRunner(
        Trigger(id=1, function="f", kind="redis"),
        make,
        cast(Store, FakeStore(log, [])),
        settings,
        wake=lambda: None,
        must_notify=lambda: False,
    )
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(5):
            await consumer.all_acked.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (made, runner.stats.reconnects, log[0]) == (2, 1, "open")
