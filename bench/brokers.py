"""`python -m bench.brokers [--quick]`: broker sources end to end (make bench-brokers).

On a real gateway process with a real Postgres, against the brokers on loopback (NATS
JetStream, Redis Streams, RabbitMQ, Mosquitto; one that does not answer is left out, saying
so), with a trivial handler:

- throughput: N messages published to the broker as fast as its client goes, until every one
  has run the handler (read from `ember_delivery_attempts_total`): messages/s end to end; the
  in-run baseline is the same N events published to an Ember topic in batches
  (`POST /v1/events`, 32 concurrent publishers): the same queue without a broker in front;
- added latency when idle: from just before the publish to the handler's start (the handler's
  own clock), one message at a time; the baseline is the same for an event published to a
  topic (`POST /v1/events/TOPIC`), so the difference is what the broker and its source add.

Prints a table and writes bench/results/brokers.json.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import aiomqtt
import asyncpg
import nats
import orjson
import redis.asyncio as aioredis

from bench.events import BATCH, CLOCK, TRIVIAL, _closed_loop, _metric
from bench.platform import Gateway, admin_headers
from bench.run import Row, bench_main, latency_row
from tests.integration.brokers import BROKERS, Broker

KINDS = ("nats", "redis", "rabbitmq", "mqtt")
TARGET_PER_S = {"nats": 2000.0, "redis": 2000.0}
WAIT_S = 180.0
MQTT_BURST = 1000
"""Mosquitto keeps at most max_queued_messages (1,000 by default) + max_inflight_messages (20)
QoS 1 messages per session and drops the rest: a longer burst than Ember takes in real time
would measure the broker's drops, so MQTT's burst is this long."""


def answers(one: Broker) -> bool:
    try:
        socket.create_connection(("127.0.0.1", one.port), timeout=2).close()
        return True
    except OSError:
        print(f"{one.kind} does not answer on 127.0.0.1:{one.port}: left out")
        return False


class Bench:
    def __init__(self, http: aiohttp.ClientSession, url: str, db: asyncpg.Connection) -> None:
        self.http, self.url, self.db = http, url, db

    async def admin(self, method: str, path: str, body: object = None) -> None:
        async with self.http.request(
            method, f"{self.url}{path}", headers=admin_headers(), json=body
        ) as response:
            assert response.status in (200, 201), await response.text()

    async def done(self, function: str) -> float:
        return await _metric(
            self.http, self.url, "ember_delivery_attempts_total", function=function,
            outcome="succeeded",
        )  # fmt: skip

    async def wait_done(self, function: str, before: float, n: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:  # the platform has no "all done" event to wait on: poll its metrics
            done = await self.done(function) - before
            if done >= n:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{function}: {done:.0f} of {n} handled after {WAIT_S:g}s")
            await asyncio.sleep(0.005)

    async def topic_throughput(self, n: int) -> float:
        headers = {**admin_headers(), "Content-Type": "application/json"}

        async def publish_batch(i: int) -> None:
            body = orjson.dumps(
                [{"topic": "bench", "data": {"i": i * BATCH + j}} for j in range(BATCH)]
            )
            async with self.http.post(f"{self.url}/v1/events", data=body, headers=headers) as r:
                assert r.status == 202, await r.text()

        before = await self.done("sink")
        t0 = time.perf_counter()
        await _closed_loop(self.http, n // BATCH, publish_batch)
        await self.wait_done("sink", before, n)
        return n / (time.perf_counter() - t0)

    async def broker_throughput(self, one: Broker, name: str, n: int) -> tuple[float, float]:
        """(end-to-end messages/s, the publisher's own messages/s)."""
        function = f"sink-{one.kind}"
        before = await self.done(function)
        payloads = [b'{"i": %d}' % i for i in range(n)]
        t0 = time.perf_counter()
        await one.publish(name, payloads)
        published_s = time.perf_counter() - t0
        await self.wait_done(function, before, n)
        return n / (time.perf_counter() - t0), n / published_s

    async def latency(self, function: str, publish: Any, samples: int) -> list[float]:
        """Publish one message at a time (`publish(payload)`), idle; publish -> handler start."""
        out = []
        for i in range(samples):
            payload = b'{"i": %d, "at": %f}' % (i, time.time())
            sent_at = time.time()
            await publish(payload)
            while True:
                result = await self.db.fetchval(
                    "SELECT result FROM ember_deliveries WHERE function = $1 AND payload = $2 "
                    "AND status = 'succeeded'",
                    function,
                    payload,
                )
                if result is not None:
                    break
                await asyncio.sleep(0.002)
            out.append(orjson.loads(result)["t"] - sent_at)
        return out


class Publisher:
    """One connection to a broker, kept open, publishing one message at a time (and waiting
    for the broker to have it: a JetStream ack, a publisher confirm, a PUBACK)."""

    def __init__(self, one: Broker, name: str) -> None:
        self.one, self.name = one, name
        self._close: list[Any] = []
        self.send: Callable[[bytes], Awaitable[Any]]

    async def __aenter__(self) -> Publisher:
        one = self.one
        if one.kind == "nats":
            nc = await nats.connect(one.url)
            self._close.append(nc.close)
            js = nc.jetstream()
            self.send = lambda p: js.publish(f"{self.name}.events", p)
        elif one.kind == "redis":
            r = aioredis.from_url(one.url)
            self._close.append(r.aclose)
            self.send = lambda p: r.xadd(self.name, {"data": p})
        elif one.kind == "rabbitmq":
            conn = await aio_pika.connect(one.url)
            self._close.append(conn.close)
            channel = await conn.channel(publisher_confirms=True)
            self.send = lambda p: channel.default_exchange.publish(
                aio_pika.Message(p, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.name,
            )
        else:
            host, port = one.url.split("://", 1)[1].rsplit(":", 1)
            client = aiomqtt.Client(host, int(port))
            await client.__aenter__()
            self._close.append(lambda: client.__aexit__(None, None, None))
            self.send = lambda p: client.publish(self.name, p, qos=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for close in self._close:
            await close()


async def run(quick: bool, database_url: str, work: Path) -> list[Row]:
    n = 2000 if quick else 10000
    samples = 50 if quick else 200
    kinds = [k for k in KINDS if answers(BROKERS[k])]
    gateway = Gateway.start(work / "state", database_url)
    rows: list[Row] = []
    names: dict[str, str] = {}
    db = await asyncpg.connect(database_url)
    try:
        async with aiohttp.ClientSession() as http:
            b = Bench(http, gateway.url, db)
            await b.admin("PUT", "/v1/topics/bench")
            await b.admin("PUT", "/v1/topics/clock")
            for function, source, topic in (("sink", TRIVIAL, "bench"), ("clock", CLOCK, "clock")):
                await b.admin("POST", "/v1/functions", {"name": function, "source": source})
                await b.admin("POST", f"/v1/functions/{function}/triggers", {"topic": topic})
            for kind in kinds:
                one, name = BROKERS[kind], BROKERS[kind].unique()
                names[kind] = name
                # A stream / queue / topic for the throughput, another for the latency.
                for function, source, at in (
                    (f"sink-{kind}", TRIVIAL, name),
                    (f"clock-{kind}", CLOCK, f"{name}-clock"),
                ):
                    await one.create(at)
                    await b.admin("POST", "/v1/functions", {"name": function, "source": source})
                    await b.admin("POST", f"/v1/functions/{function}/triggers", one.trigger(at))
            await b.topic_throughput(200)  # warm up: instances, connections
            topic_rate = await b.topic_throughput(n)
            rows.append(
                Row(f"topic events in batches of {BATCH} (baseline)", calls_per_s=topic_rate)
            )
            for kind in kinds:
                burst = min(n, MQTT_BURST) if kind == "mqtt" else n
                rate, publish_rate = await b.broker_throughput(BROKERS[kind], names[kind], burst)
                target = TARGET_PER_S.get(kind)
                rows.append(
                    Row(
                        f"{kind}: {burst} published -> handler done "
                        f"(publisher alone: {publish_rate:,.0f}/s)",
                        calls_per_s=rate,
                        ratio=f"{rate / topic_rate:.2f}x topic",
                        target=f">= {target:,.0f}/s" if target else "",
                        met=rate >= target if target else None,
                    )
                )
            headers = {**admin_headers(), "Content-Type": "application/json"}

            async def to_topic(payload: bytes) -> None:
                async with http.post(f"{gateway.url}/v1/events/clock", data=payload,
                                     headers=headers) as r:  # fmt: skip
                    assert r.status == 202

            base = await b.latency("clock", to_topic, samples)
            base_row = latency_row("topic event: publish -> handler start, idle (baseline)", base)
            rows.append(base_row)
            for kind in kinds:
                async with Publisher(BROKERS[kind], f"{names[kind]}-clock") as publisher:
                    lat = await b.latency(f"clock-{kind}", publisher.send, samples)
                row = latency_row(f"{kind}: publish -> handler start, idle", lat,
                                  target="p50 <= 10 ms")  # fmt: skip
                row.met = row.p50_ms is not None and row.p50_ms <= 10
                if base_row.p50_ms and row.p50_ms:
                    row.ratio = f"{row.p50_ms - base_row.p50_ms:+.1f} ms vs topic"
                rows.append(row)
    finally:
        gateway.stop()
        await db.close()
        for kind, name in names.items():
            await BROKERS[kind].remove(name)
            await BROKERS[kind].remove(f"{name}-clock")
    return rows


if __name__ == "__main__":
    bench_main("bench.brokers", run)
