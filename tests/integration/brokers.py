"""The real brokers the broker-source tests use, on loopback: each can say whether it answers,
make a stream, queue or topic of a unique name, publish to it and remove it again. A test
that needs a broker that does not answer is skipped, naming it (`.ci/run` starts them)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import nats
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nats.js import api

NATS_URL = os.environ.get("EMBER_TEST_NATS_URL", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("EMBER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("EMBER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MQTT_URL = os.environ.get("EMBER_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
KAFKA = os.environ.get("EMBER_TEST_KAFKA", "")
"""Kafka's tests are opt-in: EMBER_TEST_KAFKA names a broker (HOST:PORT); none runs here."""


@dataclass
class Broker:
    """One broker kind as a test drives it."""

    kind: str
    url: str
    port: int

    def require(self) -> None:
        """Skip the test unless the broker answers on its port."""
        if self.kind == "kafka" and not KAFKA:
            pytest.skip("Kafka is opt-in: set EMBER_TEST_KAFKA=HOST:PORT to test against one")
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
        elif self.kind == "kafka":
            admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
            finally:
                await admin.close()
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
        if self.kind == "kafka":
            return {"kafka": name, "group": f"{name}-group", "url": url or self.url}
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
        elif self.kind == "kafka":
            producer = AIOKafkaProducer(bootstrap_servers=url.split("://", 1)[-1])
            await producer.start()
            try:
                sent = [await producer.send(name, p) for p in payloads]
                await asyncio.gather(*sent)
            finally:
                await producer.stop()
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
            elif self.kind == "kafka":
                admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
                await admin.start()
                try:
                    await admin.delete_topics([name])
                finally:
                    await admin.close()
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
    "kafka": Broker(
        "kafka", f"kafka://{KAFKA or '127.0.0.1:9092'}", int((KAFKA or ":9092").rsplit(":")[-1])
    ),
}


class PrivateBroker:
    """A broker process of the test's own on a free loopback port, with its data in `data`,
    stopped (SIGTERM, by its PID) and started again on the same port and data: a broker restart
    that disturbs nobody else's broker."""

    COMMANDS = {
        "redis": "redis-server",
        "nats": "nats-server",
        "mqtt": "mosquitto",
        "rabbitmq": "/usr/lib/rabbitmq/bin/rabbitmq-server",
    }

    def __init__(self, kind: str, data: Path) -> None:
        self.kind = kind
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o777)  # (mosquitto, started as root, runs as its own user)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None
        url = {
            "redis": f"redis://127.0.0.1:{self.port}/0",
            "nats": f"nats://127.0.0.1:{self.port}",
            "mqtt": f"mqtt://127.0.0.1:{self.port}",
            "rabbitmq": f"amqp://guest:guest@127.0.0.1:{self.port}/",
        }[kind]
        self.broker = Broker(kind, url, self.port)

    @classmethod
    def available(cls, kind: str) -> bool:
        return kind in cls.COMMANDS and shutil.which(cls.COMMANDS[kind]) is not None

    def _argv(self) -> list[str]:
        port, data = str(self.port), str(self.data)
        if self.kind == "redis":
            return [
                "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", data,
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--protected-mode", "no",
            ]  # fmt: skip
        if self.kind == "nats":
            return ["nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", data]
        if self.kind == "rabbitmq":
            return [self.COMMANDS["rabbitmq"]]
        conf = self.data / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {data}/\nuser root\n"
        )
        return ["mosquitto", "-c", str(conf)]

    def _env(self) -> dict[str, str] | None:
        """A RabbitMQ node of its own: its name, ports, data, logs and Erlang cookie."""
        if self.kind != "rabbitmq":
            return None
        data = str(self.data)
        (self.data / "enabled_plugins").write_text("[].\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dist = self.dist_port = getattr(self, "dist_port", s.getsockname()[1])
        return {
            **os.environ,
            "HOME": data,
            "RABBITMQ_NODENAME": f"embertest{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_MNESIA_BASE": f"{data}/mnesia",
            "RABBITMQ_LOG_BASE": f"{data}/log",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{data}/enabled_plugins",
            "RABBITMQ_CONFIG_FILE": f"{data}/rabbitmq",
            "RABBITMQ_PID_FILE": f"{data}/rabbitmq.pid",
        }

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._argv(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
            cwd=self.data,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} did not start: {self._argv()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
