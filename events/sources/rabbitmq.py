"""RabbitMQ source (aio-pika): a consumer on a queue, acknowledging after Ember's commit.

`fn trigger add NAME --rabbitmq QUEUE [--exchange X [--routing-key K]] [--url amqp://...]`.
Without --exchange the queue must exist; with it the exchange must exist, and Ember declares
the queue (durable) and binds it with the routing key (default: the queue's name). Messages
are taken up to PREFETCH at a time and acknowledged together (`multiple`) once committed; a
connection that closes first gives them back to the queue (marked redelivered). A message's
`message_id` property, when its publisher sets one, is its key: one given again is not
delivered twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelNotFoundEntity, ProbableAuthenticationError

from events.sources.base import BrokerUnavailable, Received, SourceMissing, text_headers
from events.sources.secrets import mask_url

PREFETCH = 512


def options(what: str, body: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"queue": what}
    if body.get("exchange"):
        out["exchange"] = str(body["exchange"])
        out["routing_key"] = str(body.get("routing_key") or what)
    return out


def describe(options: Mapping[str, Any]) -> str:
    exchange = options.get("exchange")
    bound = f" (bound to {exchange} with {options['routing_key']})" if exchange else ""
    return f"rabbitmq queue {options['queue']}{bound}"


class Rabbit:
    def __init__(self, trigger_id: int, options: Mapping[str, Any], url: str) -> None:
        self._options = options
        self._url = url
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def open(self) -> None:
        where = mask_url(self._url)
        try:
            self._conn = await aio_pika.connect(self._url, timeout=5)
        except ProbableAuthenticationError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {where} refused the credentials or virtual host of --url: {exc}"
            ) from exc
        except Exception as exc:
            raise BrokerUnavailable(
                f"cannot reach RabbitMQ at {where} ({exc!r}); check --url and that it runs"
            ) from exc
        queue_name = self._options["queue"]
        exchange_name = self._options.get("exchange")
        channel = self._channel = await self._conn.channel()
        try:
            if exchange_name:
                exchange = await channel.get_exchange(exchange_name, ensure=True)
                queue = await channel.declare_queue(queue_name, durable=True)
                await queue.bind(exchange, routing_key=self._options["routing_key"])
            else:
                queue = await channel.get_queue(queue_name, ensure=True)
        except ChannelNotFoundEntity:
            raise SourceMissing(
                f'no exchange "{exchange_name}" on RabbitMQ at {where}; declare it first'
                if exchange_name
                else f'no queue "{queue_name}" on RabbitMQ at {where}; declare it first, or give '
                "--exchange X (and --routing-key K) to have Ember declare and bind it"
            ) from None
        await channel.set_qos(prefetch_count=PREFETCH)
        self._queue = queue
        await queue.consume(self._buffer.put, no_ack=False)

    def _check(self) -> None:
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("the RabbitMQ channel closed")

    async def fetch(self, max_messages: int, wait_s: float) -> list[Received]:
        self._check()
        try:
            first = await asyncio.wait_for(self._buffer.get(), wait_s)
        except TimeoutError:
            self._check()
            return []
        batch = [first]
        while len(batch) < max_messages and not self._buffer.empty():
            batch.append(self._buffer.get_nowait())
        return [_received(m, self._options["queue"]) for m in batch]

    async def ack(self, messages: list[Received]) -> None:
        # Delivery tags grow in the order messages were buffered: this acknowledges the batch.
        await messages[-1].handle.ack(multiple=True)

    async def lag(self) -> int | None:
        if self._channel is None or self._channel.is_closed:
            return None
        queue = await self._channel.get_queue(self._options["queue"], ensure=True)
        result = queue.declaration_result
        return int(result.message_count or 0)

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed:
            await self._conn.close()


def _received(message: AbstractIncomingMessage, queue: str) -> Received:
    return Received(
        payload=message.body,
        topic=message.routing_key or "",
        key=message.message_id or None,
        headers=text_headers(message.headers),
        content_type=message.content_type or "",
        info={
            "queue": queue,
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "delivery_tag": message.delivery_tag,
            "redelivered": message.redelivered,
            "message_id": message.message_id,
            "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        },
        handle=message,
    )
