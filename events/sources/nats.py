"""NATS JetStream source (nats-py): a durable pull consumer on a stream that holds the subject.

`fn trigger add NAME --nats SUBJECT [--stream S] [--durable D] [--url nats://...]`. The stream
must exist (found by subject when --stream is not given); the durable consumer is created when
the trigger is added (new messages from then on; explicit acks; an unacknowledged message comes
back after ACK_WAIT_S). A message's stream sequence (in this incarnation of the stream) is its
key, so one given again after a crash is not delivered twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import nats as nats_client
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from nats.js import errors as js_errors
from nats.js.client import JetStreamContext

from events.sources.base import (
    BadSource,
    BrokerUnavailable,
    Received,
    SourceMissing,
    text_headers,
)
from events.sources.secrets import mask_url

ACK_WAIT_S = 5.0
"""An unacknowledged message is given again after this (Ember acknowledges within a commit)."""
_NAME = re.compile(r"^[^.*>\s]+$")


def options(what: str, body: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    durable = str(body.get("durable") or default_name)
    if not _NAME.match(durable):
        raise BadSource("durable", f"--durable {durable!r}: no dots, spaces, * or >")
    out: dict[str, Any] = {"subject": what, "durable": durable}
    if body.get("stream"):
        out["stream"] = str(body["stream"])
    return out


def describe(options: Mapping[str, Any]) -> str:
    stream = options.get("stream")
    return f"nats {options['subject']}" + (f" (stream {stream})" if stream else "")


class Jet:
    """One connection to NATS and a pull subscription on the durable consumer."""

    def __init__(self, trigger_id: int, options: Mapping[str, Any], url: str) -> None:
        self._options = options
        self._url = url
        self._nc: NatsClient | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._incarnation = ""

    async def open(self) -> None:
        subject, durable = self._options["subject"], self._options["durable"]
        where = mask_url(self._url)
        try:
            # (Ember's runner reconnects; 0 attempts would mean "forever" to nats-py.)
            self._nc = await nats_client.connect(
                self._url,
                connect_timeout=5,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_quiet,
            )
        except Exception as exc:
            raise BrokerUnavailable(
                f"cannot reach NATS at {where} ({exc!r}); check --url and that nats-server runs"
            ) from exc
        js = self._nc.jetstream()
        stream = self._options.get("stream")
        try:
            if not stream:
                stream = await js.find_stream_name_by_subject(subject)
            info = await js.stream_info(stream)
        except js_errors.NotFoundError:
            raise SourceMissing(
                f'no JetStream stream "{stream}" on {where}; create it (nats stream add) or '
                "name another with --stream"
                if stream
                else f'no JetStream stream on {where} holds subject "{subject}"; create one '
                f"(nats stream add --subjects '{subject}') or name it with --stream"
            ) from None
        except (js_errors.ServiceUnavailableError, nats_client.errors.NoRespondersError):
            raise BrokerUnavailable(
                f"NATS at {where} has no JetStream; start nats-server with -js"
            ) from None
        # A message's key: its stream sequence, within this incarnation of the stream (a stream
        # deleted and made again starts at 1 again: its messages are new).
        created = info.created.timestamp() if info.created else 0.0
        self._incarnation = f"{stream}@{int(created * 1000)}"
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.NEW,
            ack_wait=ACK_WAIT_S,
            max_deliver=-1,
        )
        try:
            self._sub = await js.pull_subscribe(
                subject, durable=durable, stream=stream, config=config
            )
        except js_errors.BadRequestError as exc:
            raise BadSource(
                "durable", f'NATS refused the consumer "{durable}" on stream "{stream}": {exc}'
            ) from exc

    async def fetch(self, max_messages: int, wait_s: float) -> list[Received]:
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(max_messages, timeout=wait_s)
        except (TimeoutError, nats_client.errors.TimeoutError):
            return []
        return [_received(m, self._incarnation) for m in msgs]

    async def ack(self, messages: list[Received]) -> None:
        # Written to the connection's buffer, sent by its flusher: no round trip per batch (an
        # acknowledgement lost with a crash only makes NATS give a committed message again).
        for message in messages:
            await message.handle.ack()

    async def lag(self) -> int | None:
        if self._sub is None:
            return None
        info = await self._sub.consumer_info()
        return int(info.num_pending or 0)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: its default prints tracebacks; the runner logs failures."""


def _received(msg: Msg, incarnation: str) -> Received:
    meta = msg.metadata
    headers = text_headers(msg.headers)
    return Received(
        payload=msg.data,
        topic=msg.subject,
        key=f"{incarnation}:{meta.sequence.stream}",
        headers=headers,
        content_type=next((v for k, v in headers if k.lower() == "content-type"), ""),
        info={
            "subject": msg.subject,
            "stream": meta.stream,
            "stream_seq": meta.sequence.stream,
            "consumer_seq": meta.sequence.consumer,
            "delivered": meta.num_delivered,
            "timestamp": meta.timestamp.isoformat() if meta.timestamp else None,
        },
        handle=msg,
    )
