"""Kafka source (aiokafka): a member of a consumer group, committing offsets after Ember's.

`fn trigger add NAME --kafka TOPIC --group G [--bootstrap HOST:PORT,...]`. The topic must
exist. When the trigger is added and the group has no offsets yet, they are set to the end of
each partition (messages from then on). Offsets are committed to Kafka only after the batch
is committed to Ember; a crash in between makes the group read the batch again, and a
message's partition and offset are its key, so it is not delivered twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from events.sources.base import BadSource, BrokerUnavailable, Received, SourceMissing, text_headers
from events.sources.secrets import mask_url

log = logging.getLogger("ember.events.sources")


def options(what: str, body: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    if not body.get("group"):
        raise BadSource("group", "--kafka needs --group G (the consumer group Ember joins)")
    return {"topic": what, "group": str(body["group"])}


def describe(options: Mapping[str, Any]) -> str:
    return f"kafka {options['topic']} (group {options['group']})"


def _bootstrap(url: str) -> str:
    return urlsplit(url).netloc or url.split("://", 1)[-1]


class Kafka:
    def __init__(self, trigger_id: int, options: Mapping[str, Any], url: str) -> None:
        self._topic: str = options["topic"]
        self._group: str = options["group"]
        self._url = url
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: dict[TopicPartition, int] = {}

    async def open(self) -> None:
        where = mask_url(self._url)
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=_bootstrap(self._url),
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            request_timeout_ms=10000,
        )
        try:
            await consumer.start()
            topics = await consumer.topics()
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {where} ({exc!r}); check --bootstrap"
            ) from exc
        if self._topic not in topics:
            raise SourceMissing(f'no topic "{self._topic}" on Kafka at {where}; create it first')
        await self._start_at_end_if_new(consumer)
        consumer.subscribe([self._topic])

    async def _start_at_end_if_new(self, consumer: AIOKafkaConsumer) -> None:
        """A group without offsets starts at the end of each partition (as of now)."""
        partitions = [
            TopicPartition(self._topic, p) for p in consumer.partitions_for_topic(self._topic) or ()
        ]
        try:
            missing = [tp for tp in partitions if await consumer.committed(tp) is None]
            if missing:
                ends = await consumer.end_offsets(missing)
                await consumer.commit({tp: ends[tp] for tp in missing})
        except Exception as exc:  # then the group starts where auto_offset_reset says
            log.warning("could not set a new group's offsets to the end: %r", exc)

    async def fetch(self, max_messages: int, wait_s: float) -> list[Received]:
        assert self._consumer is not None
        batches = await self._consumer.getmany(
            timeout_ms=int(wait_s * 1000), max_records=max_messages
        )
        return [_received(r) for records in batches.values() for r in records]

    async def ack(self, messages: list[Received]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for message in messages:
            record: ConsumerRecord[bytes, bytes] = message.handle
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await self._consumer.commit(offsets)
        self._offsets.update(offsets)

    async def lag(self) -> int | None:
        consumer = self._consumer
        if consumer is None:
            return None
        assigned = list(consumer.assignment())
        if not assigned:
            return None
        ends = await consumer.end_offsets(assigned)
        lag = 0
        for tp in assigned:
            lag += max(int(ends[tp]) - int(await consumer.position(tp)), 0)
        return lag

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def _received(record: ConsumerRecord[bytes, bytes]) -> Received:
    headers = text_headers(dict(record.headers or ()))
    return Received(
        payload=record.value or b"",
        topic=record.topic,
        key=f"{record.partition}:{record.offset}",
        headers=headers,
        content_type=next((v for k, v in headers if k.lower() == "content-type"), ""),
        info={
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.decode(errors="replace") if record.key else None,
            "timestamp": record.timestamp,
        },
        handle=record,
    )
