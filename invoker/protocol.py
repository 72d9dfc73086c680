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
import os
import socket
import struct
from collections.abc import Mapping
from typing import Any, Literal, Required, TypedDict, cast

import orjson

from invoker.specs import SpecializeSpec

HEADER = struct.Struct(">II")
MAX_META_BYTES = 1 << 20
MAX_BODY_BYTES = 1 << 30
SMALL_FRAME_BYTES = 64 << 10


def listen(address: str) -> socket.socket:
    """A listening socket for an instance: `unix:/path` (local: no TCP stack on the hop, and
    only the platform's user may connect), or `HOST` / `HOST:PORT` over TCP (port 0: any)."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
        return sock
    host, _, port = address.partition(":") if address.count(":") == 1 else (address, "", "0")
    return socket.create_server((host, int(port or 0)), backlog=128)


STYLES = ("ember", "lambda", "openwhisk", "openfaas", "fission", "gcf", "knative", "asgi", "wsgi")
"""The handler styles a specialize message may name (besides "auto"; see invoker.styles)."""


class ProtocolError(Exception):
    """The peer sent something that is not a frame, or closed the connection mid-frame."""


class ReplyTooLarge(ProtocolError):
    """The instance announced a reply larger than the connection accepts."""


class ErrorInfo(TypedDict, total=False):
    type: str
    message: str
    traceback: str
    line: int
    retry: bool  # False: a permanent error, do not retry the event
    retry_after_s: float  # retry the event no sooner than this
    limit_bytes: int  # ResponseTooLarge: the limit the response went over


class RequestMeta(TypedDict, total=False):
    """What the handler's context shows of the HTTP request (or event) that caused a call."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    content_type: str
    source: str
    """http (the default), async, topic, schedule or table (invoker.styles.Source)."""
    client: str
    """The address of the HTTP client the gateway saw (its TCP peer)."""
    topic: str
    event_id: str
    """A delivery's id, the same on every attempt."""
    event_time: str
    """When the delivery was submitted (ISO 8601)."""
    message: dict[str, Any]
    """A broker message's metadata (events/sources): the broker, subject or routing key, stream
    sequence, entry id or offset, redelivery count..."""


class InvokeRequest(RequestMeta, total=False):
    op: Required[Literal["invoke"]]
    id: str
    """The activation id."""
    timeout_s: float


class EnvironmentSource(TypedDict):
    """Where an instance fetches its function's environment (on Kubernetes), before the
    function's code runs (`invoker.environments`)."""

    hash: str
    """The environment's hash (the name of its directory in the cache)."""
    sha256: str
    """The sha256 of its archive (tar.gz): what arrives must match it before it is unpacked."""
    size_bytes: int
    url: str
    """GET: the archive, from the node's environment cache or the platform."""
    token: str
    """Sent as `Authorization: Bearer`: good for this environment only, for a few minutes."""


class SpecializeRequest(TypedDict, total=False):
    """The function version an instance becomes; its code is the frame's body."""

    op: Required[Literal["specialize"]]
    function: Required[str]
    version: int
    filename: Required[str]
    code: Literal["source", "zip"]
    source: str
    """(Senders before 0.1 put the module's source here instead of in the body.)"""
    entry: str
    env: dict[str, str]
    timeout_s: float
    memory_bytes: int
    concurrency: int
    preimport: list[str]
    max_reply_bytes: int
    paths: list[str]
    """The environment's directories (requirements), put on sys.path."""
    environment: EnvironmentSource
    """An environment to fetch first (where the instance has no copy), put on sys.path."""
    sandbox: SpecializeSpec
    template: bool
    """Become the version's template instead of serving calls (`invoker.template`)."""
    style: str
    """The platform the handler is written for (invoker.styles), or "auto": detect it."""
    style_options: dict[str, str]


class RelabelRequest(TypedDict):
    op: Literal["relabel"]
    version: int


class PingRequest(TypedDict):
    op: Literal["ping"]


Request = InvokeRequest | SpecializeRequest | RelabelRequest | PingRequest


class Reply(TypedDict, total=False):
    """An instance's reply. It comes from user code's process: the platform checks each field
    it uses (`status` a number in range, `headers` pairs of strings) before trusting it."""

    ok: Required[bool]
    error: ErrorInfo
    logs: str
    status: int
    """HTTP status of the handler's response (invoke)."""
    headers: list[list[str]]
    import_ms: float
    """Time the module took to import (specialize), its environment's fetch included."""
    import_cpu_ms: float
    """The CPU time of that (specialize; the instance's word: what a template rule reads)."""
    env_fetch_ms: float
    """Time the environment took to fetch and unpack, or to find in the cache (specialize)."""
    env_cached: bool
    """The environment was in the instance's cache already (specialize)."""
    style: str
    """The style the instance runs the function in (specialize; detected for "auto")."""
    entry: str
    """The entry point it runs (specialize; detection may pick a well-known name)."""
    style_options: dict[str, str]
    """The style's settings as bound, those it inferred included (specialize)."""
    function: str | None
    version: int
    pid: int
    template: str
    """"ready": the instance is now its version's template (`invoker.template`); "forked":
    it was forked from one, imported already (specialize)."""


def encode_frame(meta: Mapping[str, Any], body: bytes = b"") -> list[bytes]:
    meta_bytes = orjson.dumps(meta)
    return [HEADER.pack(len(meta_bytes), len(body)), meta_bytes, body]


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """Read one frame; raises `asyncio.IncompleteReadError` on a clean EOF before the header."""
    header = await reader.readexactly(HEADER.size)
    meta_len, body_len = HEADER.unpack(header)
    if meta_len > MAX_META_BYTES or body_len > MAX_BODY_BYTES:
        raise ProtocolError(f"frame too large: meta {meta_len} bytes, body {body_len} bytes")
    try:
        if body_len and body_len + meta_len <= SMALL_FRAME_BYTES:  # one read, not two
            rest = await reader.readexactly(meta_len + body_len)
            meta = orjson.loads(memoryview(rest)[:meta_len])
            body = rest[meta_len:]
        else:
            meta = orjson.loads(await reader.readexactly(meta_len))
            body = await reader.readexactly(body_len) if body_len else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("connection closed in the middle of a frame") from exc
    if not isinstance(meta, dict):
        raise ProtocolError("frame meta is not a JSON object")
    return meta, body


class _ReplyParser(asyncio.Protocol):
    """Parses reply frames as bytes arrive, without a stream reader's per-read futures."""

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.max_body_bytes = max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[dict[str, Any], bytes]] | None = None
        self.lost: Exception | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) < HEADER.size:
            return
        meta_len, body_len = HEADER.unpack_from(self._buf)
        end = HEADER.size + meta_len + body_len
        if meta_len > MAX_META_BYTES or body_len > self.max_body_bytes:
            # Before buffering it: a hostile instance cannot make the gateway hold more.
            self._fail(
                ReplyTooLarge(
                    f"the instance sent a reply of {body_len} bytes (limit "
                    f"{self.max_body_bytes}) and {meta_len} bytes of metadata "
                    f"(limit {MAX_META_BYTES})"
                )
            )
            return
        if len(self._buf) < end:
            return
        if len(self._buf) > end:
            self._fail(ProtocolError("the instance sent more than one reply"))
            return
        try:
            meta = orjson.loads(memoryview(self._buf)[HEADER.size : HEADER.size + meta_len])
        except orjson.JSONDecodeError as exc:
            self._fail(ProtocolError(f"reply meta is not JSON: {exc}"))
            return
        body = bytes(memoryview(self._buf)[HEADER.size + meta_len : end])
        self._buf.clear()
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            self._fail(ProtocolError("the instance replied to nothing"))
        elif not isinstance(meta, dict):
            waiter.set_exception(ProtocolError("frame meta is not a JSON object"))
        else:
            waiter.set_result((meta, body))

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the instance closed the connection"))


class Connection:
    """The platform's side of one connection to an instance: one call at a time."""

    __slots__ = ("_parser", "_transport", "closed")

    def __init__(self, transport: asyncio.Transport, parser: _ReplyParser) -> None:
        self._transport = transport
        self._parser = parser
        self.closed = False

    @classmethod
    async def open(
        cls, host: str, port: int, *, max_body_bytes: int = MAX_BODY_BYTES
    ) -> Connection:
        """Connect to an instance at `host:port`, or at the Unix socket `host="unix:/path"`;
        a reply body over `max_body_bytes` fails the call (`ReplyTooLarge`)."""
        loop = asyncio.get_running_loop()

        def parser_factory() -> _ReplyParser:
            return _ReplyParser(max_body_bytes)

        if host.startswith("unix:"):
            transport, parser = await loop.create_unix_connection(
                parser_factory, host[len("unix:") :]
            )
        else:
            transport, parser = await loop.create_connection(parser_factory, host, port)
        return cls(transport, parser)

    async def call(
        self, meta: Request, body: bytes = b"", *, timeout_s: float | None = None
    ) -> tuple[Reply, bytes]:
        """Send a request and wait for its reply, at most `timeout_s` (then `TimeoutError`,
        and the connection is closed: the reply may still come).

        Raises `ConnectionError` when the instance goes away (the caller discards the instance).
        """
        if self.closed or self._parser.lost is not None:
            self.close()
            raise ConnectionResetError("connection to the instance is closed")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._parser.waiter = waiter
        # A timer on the reply's future, not `asyncio.timeout` (a task cancellation): a
        # third of the cost, on every call.
        timer = None if timeout_s is None else loop.call_later(timeout_s, _expire, waiter)
        frame = encode_frame(meta, body)
        try:
            if len(body) < SMALL_FRAME_BYTES:
                self._transport.write(b"".join(frame))  # one send() instead of three
            else:
                self._transport.writelines(frame)
            reply, reply_body = await waiter
            return cast(Reply, reply), reply_body
        except (ReplyTooLarge, TimeoutError):  # (before OSError: TimeoutError is one)
            self.close()
            raise
        except (ProtocolError, OSError) as exc:
            self.close()
            raise ConnectionResetError(f"instance connection lost: {exc}") from exc
        except BaseException:
            # Cancelled mid-call: the stream position is unknown, never reuse it.
            self.close()
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # (the timer's, set as the task was cancelled: retrieved)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    @property
    def usable(self) -> bool:
        """Open, and the instance has not closed its end."""
        return not self.closed and self._parser.lost is None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._transport.close()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
