"""MQTT source (aiomqtt, on paho-mqtt): a persistent session subscribed to a topic filter.

`fn trigger add NAME --mqtt TOPIC [--qos 1] [--url mqtt://...]`. The session (client id
`client_id`, clean session off) is created when the trigger is added, so the broker keeps QoS
1 and 2 messages for Ember while no gateway is connected. Acknowledgements are manual: the
PUBACK of a message is sent only after Ember's commit, and a message not acknowledged when the
connection drops is sent again by the broker on the next connection. MQTT has no message id
that survives a redelivery (the packet id is reused), so a message given again is delivered
again; QoS 0 is at most once (the broker does not keep or resend it). MQTT topics need not
exist beforehand: only an unreachable broker or a bad filter is refused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from events.sources.base import BadSource, BrokerUnavailable, Received
from events.sources.secrets import mask_url


def options(what: str, body: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    try:
        qos = int(body.get("qos", 1))
    except (TypeError, ValueError):
        qos = -1
    if qos not in (0, 1, 2):
        raise BadSource("qos", f"--qos {body.get('qos')!r}: 0, 1 or 2 (1: at least once)")
    if "#" in what[:-1] or any(("+" in p and p != "+") for p in what.split("/")):
        raise BadSource("mqtt", f"--mqtt {what!r} is not a topic filter (+ and # stand alone)")
    return {"topic": what, "qos": qos, "client_id": str(body.get("client_id") or default_name)}


def describe(options: Mapping[str, Any]) -> str:
    return f"mqtt {options['topic']} (qos {options['qos']})"


class Mqtt:
    def __init__(self, trigger_id: int, options: Mapping[str, Any], url: str) -> None:
        self._options = options
        self._url = url
        self._client: aiomqtt.Client | None = None

    async def open(self) -> None:
        parts = urlsplit(self._url)
        tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        client = aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            identifier=self._options["client_id"],
            clean_session=False,
            keepalive=15,
            timeout=5,
            tls_context=tls,
        )
        # paho sends a message's PUBACK only when told (after Ember's commit): aiomqtt has no
        # setting for it, so it is set on the paho client it wraps.
        client._client.manual_ack_set(True)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(
                f"cannot connect to MQTT at {mask_url(self._url)} ({exc}); check --url "
                "(and its credentials) and that the broker runs"
            ) from exc
        self._client = client
        await client.subscribe(self._options["topic"], qos=self._options["qos"])

    async def fetch(self, max_messages: int, wait_s: float) -> list[Received]:
        client = self._client
        assert client is not None
        messages = client.messages
        try:
            first = await asyncio.wait_for(anext(messages), wait_s)
        except TimeoutError:
            return []
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"lost the MQTT connection: {exc}") from exc
        batch = [first]
        while len(batch) < max_messages and len(messages) > 0:
            batch.append(await anext(messages))
        return [_received(m) for m in batch]

    async def ack(self, messages: list[Received]) -> None:
        assert self._client is not None
        paho = self._client._client
        for message in messages:
            if message.info["qos"] > 0:
                paho.ack(message.info["mid"], message.info["qos"])

    async def lag(self) -> int | None:
        return None  # MQTT brokers do not say how many messages wait for a session

    async def close(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)


def _received(message: aiomqtt.Message) -> Received:
    payload = message.payload
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes | bytearray):
        payload = b"" if payload is None else str(payload).encode()
    return Received(
        payload=bytes(payload),
        topic=str(message.topic),
        info={
            "topic": str(message.topic),
            "qos": message.qos,
            "retain": message.retain,
            "mid": message.mid,
        },
        handle=message,
    )
