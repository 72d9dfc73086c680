"""Redis Streams source (redis-py's asyncio client): a consumer group on a stream.

`fn trigger add NAME --redis-stream KEY [--group G] [--url redis://...]`. The stream must
exist; the group is created when the trigger is added (entries added from then on). Ember
reads as one consumer of the group (`CONSUMER`: one gateway consumes a source at a time), so
after a crash it first reads the entries it had taken and not acknowledged (its pending list),
then new ones; an entry is XACKed once committed. The entry id is its key: one read again is
not delivered twice.

The payload is the entry's `data` field (or `payload`, or `body`), its other fields headers;
an entry without one of those is given as a JSON object of its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from events.sources.base import BadSource, BrokerUnavailable, Received, SourceMissing
from events.sources.secrets import mask_url

CONSUMER = "ember"
PAYLOAD_FIELDS = (b"data", b"payload", b"body")


def options(what: str, body: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    return {"stream": what, "group": str(body.get("group") or default_name)}


def describe(options: Mapping[str, Any]) -> str:
    return f"redis stream {options['stream']} (group {options['group']})"


class RedisStream:
    def __init__(self, trigger_id: int, options: Mapping[str, Any], url: str) -> None:
        self._key: str = options["stream"]
        self._group: str = options["group"]
        self._url = url
        self._redis: aioredis.Redis | None = None
        self._pending = True

    async def open(self) -> None:
        where = mask_url(self._url)
        try:
            self._redis = aioredis.from_url(self._url, socket_connect_timeout=5)
            await self._redis.ping()
            found = await self._redis.type(self._key)
            kind = found if isinstance(found, bytes) else found.encode()
        except redis_errors.AuthenticationError as exc:
            raise BrokerUnavailable(f"Redis at {where} refused the credentials: {exc}") from exc
        except (redis_errors.RedisError, OSError, ValueError) as exc:
            raise BrokerUnavailable(
                f"cannot reach Redis at {where} ({exc!r}); check --url and that it runs"
            ) from exc
        if kind == b"none":
            raise SourceMissing(
                f'no stream "{self._key}" on Redis at {where}; create it first '
                f"(XADD {self._key} * data ...) or check the key"
            )
        if kind != b"stream":
            raise BadSource("redis_stream", f'"{self._key}" on {where} is a {kind.decode()}')
        try:
            await self._redis.xgroup_create(self._key, self._group, id="$")
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._pending = True

    async def fetch(self, max_messages: int, wait_s: float) -> list[Received]:
        assert self._redis is not None
        try:
            if self._pending:  # what this consumer took before and did not acknowledge
                reply: Any = await self._redis.xreadgroup(
                    self._group, CONSUMER, {self._key: "0"}, count=max_messages
                )
                entries = reply[0][1] if reply else []
                if entries:
                    return [self._received(i, f) for i, f in entries]
                self._pending = False
            reply = await self._redis.xreadgroup(
                self._group,
                CONSUMER,
                {self._key: ">"},
                count=max_messages,
                block=max(int(wait_s * 1000), 1),
            )
        except redis_errors.ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise SourceMissing(f'stream "{self._key}" or its group is gone: {exc}') from exc
            raise
        entries = reply[0][1] if reply else []
        return [self._received(i, f) for i, f in entries]

    def _received(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Received:
        fields = fields or {}  # (an entry trimmed away while pending has none)
        entry = entry_id.decode()
        payload_field = next((f for f in PAYLOAD_FIELDS if f in fields), None)
        headers = [
            (k.decode(errors="replace"), v.decode(errors="replace"))
            for k, v in fields.items()
            if k != payload_field
        ]
        if payload_field is not None:
            payload, content_type = fields[payload_field], ""
        else:
            payload, content_type = orjson.dumps(dict(headers)), "application/json"
            headers = []
        return Received(
            payload=payload,
            topic=self._key,
            key=entry,
            headers=headers,
            content_type=content_type,
            info={"stream": self._key, "id": entry, "group": self._group},
            handle=entry_id,
        )

    async def ack(self, messages: list[Received]) -> None:
        assert self._redis is not None
        await self._redis.xack(self._key, self._group, *[m.handle for m in messages])

    async def lag(self) -> int | None:
        assert self._redis is not None
        for group in await self._redis.xinfo_groups(self._key):
            if group.get("name") in (self._group, self._group.encode()):
                lag = group.get("lag")
                return None if lag is None else int(lag)
        return None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
