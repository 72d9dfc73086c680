"""The platform's side of an instance connection (`invoker.protocol.Connection`) against a
real socket: the per-call timeout is a timer on the reply, and a late reply cannot be mistaken
for the next call's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from invoker.protocol import Connection, encode_frame, read_frame

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _server(serve: Serve) -> AsyncIterator[int]:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_call_past_its_timeout_fails_and_closes_the_connection() -> None:
    received = asyncio.Event()
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        received.set()
        assert await reader.read() == b""  # the platform hung up
        closed.set()
        writer.close()

    async with _server(silent) as port:
        conn = await Connection.open("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await conn.call({"op": "invoke", "id": "a"}, b"{}", timeout_s=0.05)
        assert loop.time() - started >= 0.04  # (the loop clock counts whole ms)
        assert received.is_set()
        assert not conn.usable  # its reply may still come: never reused
        await asyncio.wait_for(closed.wait(), 5)


async def test_a_reply_in_time_cancels_the_timer() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                meta, body = await read_frame(reader)
            except asyncio.IncompleteReadError:
                break
            writer.writelines(encode_frame({"ok": True, "id": meta["id"]}, body))
        writer.close()

    async with _server(echo) as port:
        conn = await Connection.open("127.0.0.1", port)
        for i in range(3):
            reply, body = await conn.call({"op": "invoke", "id": str(i)}, b"x", timeout_s=0.05)
            assert (reply, body) == ({"ok": True, "id": str(i)}, b"x")
        await asyncio.sleep(0.1)  # past the deadlines of the calls above: no timer fires
        assert conn.usable
        reply, _ = await conn.call({"op": "invoke", "id": "last"}, timeout_s=5)
        assert reply == {"ok": True, "id": "last"}
        conn.close()
