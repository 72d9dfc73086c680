"""A lean HTTP/1.1 client for sending calls to peer gateways over kept-alive connections.

The hop to a function's home gateway is on the warm path of every call that lands elsewhere,
so it is written for that one job: one request at a time per connection, the request written
in one `write`, the response parsed by Content-Length (or chunked, or until the peer closes),
idle connections kept per peer for `idle_s`. aiohttp's client does much more per request
(cookies, redirects, tracing, timeouts, its own headers) and costs about twice as much here
(bench/gateways.py measures the hop).

Errors, as the router needs them:

    PeerError
     ├── NotReached   no connection could be made: the request reached nobody
     └── Lost         the connection broke after the request was written: it may have run
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass
from typing import cast


class PeerError(Exception):
    pass


class NotReached(PeerError):
    pass


class Lost(PeerError):
    pass


@dataclass(slots=True, frozen=True)
class PeerResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection to a peer; `exchange` writes a request and waits for its response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._head_end = -1
        self._no_body = False
        self._waiter: asyncio.Future[PeerResponse] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            parsed = self._parse(eof=True)  # a body that ends with the connection
            if parsed is not None:
                self._waiter.set_result(parsed)
            else:
                self._waiter.set_exception(Lost(repr(exc) if exc else "connection closed"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            parsed = self._parse(eof=False)
        except ValueError as exc:
            self.reusable = False
            self._waiter.set_exception(Lost(f"malformed response: {exc}"))
            return
        if parsed is not None:
            self._waiter.set_result(parsed)

    async def exchange(self, request: bytes, *, no_body: bool) -> PeerResponse:
        assert self.transport is not None
        self._buffer.clear()
        self._head_end = -1
        self._no_body = no_body
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self._waiter
        except BaseException:
            self.reusable = False  # cancelled or broken mid-response
            raise
        finally:
            self._waiter = None

    def _parse(self, *, eof: bool) -> PeerResponse | None:
        buffer = self._buffer
        if self._head_end < 0:
            self._head_end = buffer.find(b"\r\n\r\n")
            if self._head_end < 0:
                return None
        start = self._head_end + 4
        lines = bytes(buffer[: self._head_end]).decode("utf-8", "surrogateescape").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ValueError(f"status line {lines[0][:100]!r}")
        status = int(status_line[1])
        headers = []
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"header line {line[:100]!r}")
            value = value.strip()
            lower = name.lower()
            if lower == "content-length":
                length = int(value)
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lower == "connection" and value.lower() == "close":
                self.reusable = False
            headers.append((name, value))
        if self._no_body or status in (204, 304) or 100 <= status < 200:
            body: bytes | None = b""
            end = start
        elif chunked:
            body, end = _dechunk(buffer, start)
        elif length is not None:
            end = start + length
            body = bytes(buffer[start:end]) if len(buffer) >= end else None
        else:
            self.reusable = False
            end = len(buffer)
            body = bytes(buffer[start:]) if eof else None
        if body is None:
            return None
        if len(buffer) > end:
            self.reusable = False  # more than one response: not ours to guess
        return PeerResponse(status, headers, body)


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes | None, int]:
    """The body of a chunked message from `start`, and where it ends; None while incomplete."""
    parts: list[bytes] = []
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None, 0
        size = int(bytes(buffer[at:line_end]).split(b";", 1)[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", at - 2)
            if trailer_end < 0:
                return None, 0
            return b"".join(parts), trailer_end + 4
        if len(buffer) < at + size + 2:
            return None, 0
        parts.append(bytes(buffer[at : at + size]))
        at += size + 2


KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 10, 5, 3
UNACKED_MS = 30_000


def _find_out_silent_deaths(sock: socket.socket | None) -> None:
    """A peer whose node dies, or that is cut off, sends no FIN or RST: a call waiting for
    its answer would wait forever (a written request is acknowledged, then nothing). Keepalive
    probes end such a connection within 25 s of silence, and unacknowledged writes within
    30 s, so the waiting call gets `Lost` (a 502 home_gateway_lost) and its resources back."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # (not every platform has them all)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_MS)


class PeerClient:
    """Kept-alive connections to peer gateways, by (host, port)."""

    def __init__(self, *, connect_timeout_s: float, idle_s: float = 30.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.idle_s = idle_s
        """Idle connections older than this are closed, not used: shorter than a gateway's
        FN_IDLE_TIMEOUT (75 s), so a peer never closes one as it is being used."""
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(
        self, peer: tuple[str, int], request: bytes, *, no_body: bool = False
    ) -> PeerResponse:
        """Send `request` (a whole HTTP/1.1 request) to `peer` and return the response."""
        conn = await self._connection(peer)
        try:
            response = await conn.exchange(request, no_body=no_body)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        if conn.reusable and not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(peer, []).append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        return response

    async def probe(self, peer: tuple[str, int]) -> bool:
        """Whether `peer` takes a connection now (kept for the next request if it does)."""
        try:
            conn = await self._connect(peer)
        except NotReached:
            return False
        conn.idle_since = time.monotonic()
        self._idle.setdefault(peer, []).append(conn)
        return True

    async def _connection(self, peer: tuple[str, int]) -> _Connection:
        idle = self._idle.get(peer)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_s:
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return await self._connect(peer)

    async def _connect(self, peer: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, *peer)
        except (OSError, TimeoutError) as exc:
            raise NotReached(f"{exc.__class__.__name__}: {exc}") from exc
        assert conn.transport is not None
        _find_out_silent_deaths(conn.transport.get_extra_info("socket"))
        return conn

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
