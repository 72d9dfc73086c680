"""The wire protocol between the platform and an invoker instance.

One persistent TCP connection per concurrency slot; on it, strictly one request then one reply.
Every message is a frame:

    uint32 meta_bytes | uint32 body_bytes | meta (JSON object) | body (raw bytes)

Bodies pass through untouched (no JSON re-encoding of user payloads). Requests carry `op`:

- `ping`: liveness; the reply says whether the instance is generic or specialized.
- `specialize`: push one function version's source and configuration; imported once.
- `relabel`: give a specialized instance its version number (at deploy, after the import check).
- `invoke`: run the handler on the body; the reply's body is the handler's response body.

Replies carry `ok`; on failure an `error` object with `type` and `message`.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, TypedDict

import orjson

HEADER = struct.Struct(">II")
MAX_META_BYTES = 1 << 20
MAX_BODY_BYTES = 1 << 30


class ProtocolError(Exception):
    """The peer sent something that is not a frame, or closed the connection mid-frame."""


class ErrorInfo(TypedDict, total=False):
    type: str
    message: str
    traceback: str
    line: int


def encode_frame(meta: dict[str, Any], body: bytes = b"") -> list[bytes]:
    meta_bytes = orjson.dumps(meta)
    return [HEADER.pack(len(meta_bytes), len(body)), meta_bytes, body]


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """Read one frame; raises `asyncio.IncompleteReadError` on a clean EOF before the header."""
    header = await reader.readexactly(HEADER.size)
    meta_len, body_len = HEADER.unpack(header)
    if meta_len > MAX_META_BYTES or body_len > MAX_BODY_BYTES:
        raise ProtocolError(f"frame too large: meta {meta_len} bytes, body {body_len} bytes")
    try:
        meta = orjson.loads(await reader.readexactly(meta_len))
        body = await reader.readexactly(body_len) if body_len else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("connection closed in the middle of a frame") from exc
    if not isinstance(meta, dict):
        raise ProtocolError("frame meta is not a JSON object")
    return meta, body


class Connection:
    """The platform's side of one connection to an instance: one call at a time."""

    __slots__ = ("_reader", "_writer", "closed")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def call(self, meta: dict[str, Any], body: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """Send a request and wait for its reply.

        Raises `ConnectionError` when the instance goes away (the caller discards the instance).
        """
        if self.closed:
            raise ConnectionResetError("connection to the instance is closed")
        try:
            self._writer.writelines(encode_frame(meta, body))
            return await read_frame(self._reader)
        except (asyncio.IncompleteReadError, ProtocolError, OSError) as exc:
            self.close()
            raise ConnectionResetError(f"instance connection lost: {exc}") from exc
        except BaseException:
            # Cancelled or timed out mid-call: the stream position is unknown, never reuse it.
            self.close()
            raise

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
