"""The real brokers the broker-source tests use, on loopback: each can say whether it answers,
make a stream, queue or topic of a unique name, publish to it and remove it again. A test
that needs a broker that does not answer is skipped, naming it (`.ci/run` starts them)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiomqtt
import nats
import pytest
import redis.asyncio as aioredis
from nats.js import api

NATS_URL = os.environ.get("EMBER_TEST_NATS_URL", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("EMBER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("EMBER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MQTT_URL = os.environ.get("EMBER_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@dataclass
class Broker:
    """One broker kind as a test drives it."""

    kind: str
    url: str
    port: int

    def require(self) -> None:
        """Skip the test unless the broker answers on its port."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except OSError as exc:
            pytest.skip(f"{self.kind} does not answer on 127.0.0.1:{self.port} ({exc})")

    def unique(self) -> str:
        return f"ember-test-{uuid.uuid4().hex[:10]}"

    async def create(self, name: str) -> None:
        """Make what a trigger on `name` consumes (a stream, a queue...)."""
        if self.kind == "nats":
            nc = await nats.connect(self.url)
            try:
                await nc.jetstream().add_stream(
                    api.StreamConfig(
                        name=name, subjects=[f"{name}.>"], storage=api.StorageType.FILE
                    )
                )
            finally:
                await nc.close()
        elif self.kind == "rabbitmq":
            conn = await aio_pika.connect(self.url)
            async with conn:
                channel = await conn.channel()
                await channel.declare_queue(name, durable=True)
        elif self.kind == "redis":
            r = aioredis.from_url(self.url)
            try:
                await r.xadd(name, {"data": b"created"})
                await r.xtrim(name, maxlen=0)
            finally:
                await r.aclose()

    def trigger(self, name: str, url: str | None = None) -> dict[str, Any]:
        """The body of `POST /v1/functions/F/triggers` consuming `name`."""
        key = {"nats": "nats", "rabbitmq": "rabbitmq", "redis": "redis_stream", "mqtt": "mqtt"}
        what = f"{name}.events" if self.kind == "nats" else name
        return {key[self.kind]: what, "url": url or self.url}

    async def publish(self, name: str, payloads: Sequence[bytes], url: str | None = None) -> None:
        url = url or self.url
        if self.kind == "nats":
            nc = await nats.connect(url)
            try:
                js = nc.jetstream()
                for chunk in _chunks(payloads, 100):
                    acks = [js.publish(f"{name}.events", p) for p in chunk]
                    await asyncio.gather(*acks)
            finally:
                await nc.close()
        elif self.kind == "rabbitmq":
            conn = await aio_pika.connect(url)
            async with conn:
                channel = await conn.channel(publisher_confirms=True)
                for chunk in _chunks(payloads, 100):
                    await asyncio.gather(
                        *[
                            channel.default_exchange.publish(
                                aio_pika.Message(p, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                routing_key=name,
                            )
                            for p in chunk
                        ]
                    )
        elif self.kind == "redis":
            r = aioredis.from_url(url)
            try:
                async with r.pipeline(transaction=False) as pipe:
                    for p in payloads:
                        pipe.xadd(name, {"data": p, "origin": "test"})
                    await pipe.execute()
            finally:
                await r.aclose()
        elif self.kind == "mqtt":
            host, port = url.split("://", 1)[1].rsplit(":", 1)
            async with aiomqtt.Client(host, int(port), identifier=f"pub-{uuid.uuid4().hex}") as c:
                for p in payloads:
                    await c.publish(name, p, qos=1)

    async def remove(self, name: str) -> None:
        try:
            if self.kind == "nats":
                nc = await nats.connect(self.url)
                try:
                    await nc.jetstream().delete_stream(name)
                finally:
                    await nc.close()
            elif self.kind == "rabbitmq":
                conn = await aio_pika.connect(self.url)
                async with conn:
                    channel = await conn.channel()
                    await channel.queue_delete(name)
            elif self.kind == "redis":
                r = aioredis.from_url(self.url)
                try:
                    await r.delete(name)
                finally:
                    await r.aclose()
        except Exception as exc:  # cleanup only: the name is unique anyway
            print(f"could not remove {self.kind} {name}: {exc!r}")


def _chunks(items: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


BROKERS = {
    "nats": Broker("nats", NATS_URL, 4222),
    "rabbitmq": Broker("rabbitmq", RABBITMQ_URL, 5672),
    "redis": Broker("redis", REDIS_URL, 6379),
    "mqtt": Broker("mqtt", MQTT_URL, 1883),
}
