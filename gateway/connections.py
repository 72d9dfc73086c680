"""Client connections: the limits aiohttp's server lacks, and its own errors in JSON.

aiohttp has no header or body read timeout and no cap on open connections: a client that sends
a header byte every few seconds, announces a body it never sends, or opens 20,000 connections
holds a file descriptor each for as long as it likes (slowloris). Here each connection is a
small state machine with one deadline (`HttpSettings`):

    idle ──a byte──▶ headers ──headers parsed──▶ busy ──response written──▶ idle
      │ idle_timeout_s   │ header_timeout_s         │ body_timeout_s, until the body is in
      ▼                  ▼                          ▼
    closed          408, closed           the handler's read fails: 408, closed

As in hyper and Go's ReadHeaderTimeout, the header clock starts at a request's first byte.
Open connections are capped (`max_connections`): one more closes the connection that has
waited longest for a request (idle, or still sending its headers, as every slowloris
connection is), as nginx drains idle keep-alive connections when it runs out; when every
connection is busy with a request, the new one gets 503 with Retry-After and is closed.

An HTTP/0.9 request line (no version: the client waits for a body without headers) gets 400
at once on a connection's first request; later ones meet the header timeout. Errors of
aiohttp's parser (bad method, header too long, bad bytes in the path) get the JSON error shape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.errors import BodyTimeout, error_response
from gateway.settings import HttpSettings

log = logging.getLogger("ember.gateway.connections")

RequestHandlerFn = Callable[[BaseRequest], Awaitable[web.StreamResponse]]
DISPATCH: web.AppKey[Callable[[RequestHandlerFn], RequestHandlerFn]] = web.AppKey("dispatch")
"""Set on an application, `GatewayRunner` serves it with `app[DISPATCH](app's own handler)`:
a handler that takes some requests itself and passes the others on."""

_IDLE, _HEADERS, _BUSY, _WRITING, _CLOSED = range(5)
_VERSION = re.compile(rb" HTTP/(\d)\.(\d)$")
_MAX_FIRST_LINE = 8190  # aiohttp's max_line_size: longer lines are the parser's to refuse


def raw_error(status: int, code: str, message: str, headers: Mapping[str, str] = {}) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for a connection that has
    no request to answer through aiohttp."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connections:
    """The open connections of one server, and those waiting for a request in the order they
    began to wait (the first is the one to close when the cap is reached)."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.open: set[Connection] = set()
        self.waiting: dict[Connection, None] = {}  # insertion-ordered: oldest first
        self.stalling: dict[Connection, None] = {}
        """Connections receiving a body or writing a response, oldest first: when none waits
        for a request, the first of them still stalled is closed to make room."""
        self.refused_total = 0
        self.evicted_total = 0
        self.timed_out_total = 0
        s = settings
        self.busy_reply = raw_error(
            503,
            "too_many_connections",
            f"the gateway has {s.max_connections} connections open, all busy (FN_MAX_CONNECTIONS)"
            "; retry shortly",
            {"Retry-After": "1"},
        )
        self.header_timeout_reply = raw_error(
            408,
            "header_timeout",
            f"the request's headers did not arrive within {s.header_timeout_s:g}s "
            "(FN_HEADER_TIMEOUT)",
        )

    def make_room(self) -> bool:
        """Below the cap, or made so by closing the connection waiting longest."""
        if len(self.open) < self.settings.max_connections:
            return True
        oldest = next(iter(self.waiting), None) or next(
            (c for c in self.stalling if c.stalled), None
        )
        if oldest is None:
            return False  # every connection runs a handler: 503
        self.evicted_total += 1
        oldest.close_now()
        return True

    def discard(self, connection: Connection) -> None:
        self.open.discard(connection)
        self.waiting.pop(connection, None)
        self.stalling.pop(connection, None)


class Connection(RequestHandler):
    """aiohttp's protocol for one client connection, with the deadlines and the cap."""

    __slots__ = (
        "_body",
        "_deadline",
        "_event_loop",
        "_first",
        "_refused",
        "_state",
        "_table",
        "_timer",
    )

    def __init__(self, manager: GatewayServer, *, loop: asyncio.AbstractEventLoop, **kwargs: Any):
        super().__init__(manager, loop=loop, **kwargs)
        self._table = manager.table
        self._event_loop = loop
        self._state = _IDLE
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._first: bytes | None = b""  # the first request line, until it is checked
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        table = self._table
        if not table.make_room():
            table.refused_total += 1
            self._state = _CLOSED
            self._refused = True
            writing = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
            writing.write(table.busy_reply)
            writing.close()
            return
        super().connection_made(transport)
        table.open.add(self)
        self._wait()

    def data_received(self, data: bytes) -> None:
        state = self._state
        arm = False
        if state != _BUSY:
            if state == _CLOSED:
                return
            if state == _IDLE:
                self._state = _HEADERS
                # The header deadline; its timer (earlier than the idle one: a timer handle
                # cancelled and made) only when the headers did not all come in this read.
                self._deadline = self._event_loop.time() + self._table.settings.header_timeout_s
                arm = True
            if self._first is not None and not self._check_first_line(data):
                return
        super().data_received(data)
        if arm and self._state == _HEADERS and not self._messages:
            self._set_deadline(self._table.settings.header_timeout_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return  # aiohttp never saw it
        self._table.discard(self)
        self._state = _CLOSED
        self._body = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def request_started(self, payload: StreamReader) -> None:
        """The request's headers are parsed (from `GatewayServer`'s request factory)."""
        self._table.waiting.pop(self, None)
        self._state = _BUSY
        self._first = None
        if payload.is_eof():
            self._body = None
            self._deadline = math.inf
        else:
            self._body = payload
            self._table.stalling[self] = None
            self._set_deadline(self._table.settings.body_timeout_s)

    @property
    def stalled(self) -> bool:
        """Waiting on the client: for the rest of a body, or to read the response."""
        body = self._body
        return self._state == _WRITING or (
            self._state == _BUSY and body is not None and not body.is_eof()
        )

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self._state == _BUSY:
            self._state = _WRITING
            stalling = self._table.stalling
            stalling.pop(self, None)
            stalling[self] = None  # (last: the oldest stalled are closed first)
            self._set_deadline(self._table.settings.write_timeout_s)
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if self._state == _WRITING:
                self._body = None
                self._table.stalling.pop(self, None)
                self._wait()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp answers when its parser refuses a request (or a handler fails outside
        the app's middleware): the JSON error shape, logged without a traceback for a 4xx."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started: no room for an error")
        if status >= 500:
            log.error("error handling a request", exc_info=exc)
            text = "internal error; see the gateway's logs"
        else:
            log.debug("bad request from %s: %s", request.remote, exc)
            detail = (message or str(exc or "")).strip().splitlines()
            text = "bad HTTP request" + (f": {detail[0][:200]}" if detail else "")
        code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        response = error_response(status, code, text)
        response.force_close()
        return response

    def close_now(self) -> None:
        """Close at once (to make room, or past a deadline): no answer, and what is still to
        be written is dropped (a client that does not read would keep a closing connection
        open until it did)."""
        self._table.discard(self)
        writing = self._state == _WRITING
        self._state = _CLOSED
        if writing and self.transport is not None:
            self.transport.abort()
        self.force_close()

    def _wait(self) -> None:
        """Wait for the next request: idle, and last in the line to be closed for room."""
        self._state = _IDLE
        self._table.waiting[self] = None
        self._set_deadline(self._table.settings.idle_timeout_s)

    def _check_first_line(self, data: bytes) -> bool:
        """Whether the first request line, once whole, names HTTP/1.x; if not, answer and
        close. (Checked on the first request only: later ones may follow a pipelined one.)"""
        assert self._first is not None
        seen = (self._first + data).lstrip(b"\r\n")
        end = seen.find(b"\n")
        if end < 0:
            self._first = seen if len(seen) <= _MAX_FIRST_LINE else None
            return True
        self._first = None
        line = seen[:end].rstrip(b"\r")
        version = _VERSION.search(line)
        if version is not None and version[1] == b"1":
            return True
        if version is None:
            reply = raw_error(
                400,
                "bad_request_line",
                "the request line names no HTTP version (HTTP/0.9 is not served): "
                "send METHOD PATH HTTP/1.1",
            )
        else:
            reply = raw_error(
                505,
                "http_version_not_supported",
                f"HTTP/{version[1].decode()}.{version[2].decode()} is not served: use HTTP/1.1",
            )
        self._answer_and_close(reply)
        return False

    def _answer_and_close(self, reply: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(reply)
        self.close_now()

    def _set_deadline(self, timeout_s: float) -> None:
        deadline = self._event_loop.time() + timeout_s
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._event_loop.call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if self._event_loop.time() < deadline:  # moved later since it was armed
            if deadline != math.inf:
                self._timer = self._event_loop.call_at(deadline, self._on_deadline)
            return
        self._deadline = math.inf
        state = self._state
        if state == _IDLE:
            self.close_now()
        elif state == _HEADERS:
            self._table.timed_out_total += 1
            self._answer_and_close(self._table.header_timeout_reply)
        elif state == _WRITING:
            self._table.timed_out_total += 1
            log.debug("closing a connection whose client does not read its response")
            self.close_now()
        elif state == _BUSY and self._body is not None and not self._body.is_eof():
            self._table.timed_out_total += 1
            timeout_s = self._table.settings.body_timeout_s
            self._body.set_exception(BodyTimeout(timeout_s))


class GatewayServer(web.Server):
    """aiohttp's low-level server with `Connection` as its protocol."""

    def __init__(
        self,
        handler: Any,
        *,
        request_factory: Any,
        settings: HttpSettings,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, request_factory=request_factory, loop=loop, **kwargs)
        self.table = Connections(settings)
        self._protocol_loop = loop
        self._protocol_kwargs = kwargs

        def started(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> BaseRequest:
            request: BaseRequest = request_factory(message, payload, protocol, writer, task)
            cast(Connection, protocol).request_started(payload)
            return request

        self.request_factory = started

    def __call__(self) -> RequestHandler:
        return Connection(self, loop=self._protocol_loop, **self._protocol_kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose server is a `GatewayServer`: serve the app with
    `web.TCPSite(runner, host, port)` as usual."""

    def __init__(
        self, app: web.Application, settings: HttpSettings, *, shutdown_timeout: float
    ) -> None:
        # aiohttp's own idle timer never fires before ours.
        keepalive_s = max(settings.idle_timeout_s, settings.header_timeout_s) + 1
        self._handler_kwargs: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": keepalive_s,
        }
        super().__init__(app, shutdown_timeout=shutdown_timeout, **self._handler_kwargs)
        self.settings = settings

    async def _make_server(self) -> web.Server:
        stock = await super()._make_server()  # starts and freezes the app
        handler = stock.request_handler
        dispatch = self.app.get(DISPATCH)
        if dispatch is not None:
            handler = dispatch(handler)
        return GatewayServer(
            handler,
            request_factory=stock.request_factory,
            settings=self.settings,
            loop=asyncio.get_running_loop(),
            access_log_class=AccessLogger,
            **self._handler_kwargs,
        )

    @property
    def connections(self) -> Connections:
        server = self.server
        assert isinstance(server, GatewayServer)
        return server.table
