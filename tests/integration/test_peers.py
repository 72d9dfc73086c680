"""The lean HTTP/1.1 client gateways send calls to their peers with (gateway/peers.py), against
servers on loopback that answer with exact bytes; and how the router takes back a home that
refused a connection."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from gateway.peers import Lost, NotReached, PeerClient
from gateway.routing import Router
from gateway.settings import RoutingSettings
from store import Store
from store.gateways import GatewayHome

REQUEST = b"POST /fn/f HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"

Answer = Callable[[bytes], bytes | None]
"""What the server writes for the bytes of one request; None: close without answering."""
Serve = Callable[[Answer], Awaitable[tuple[str, int]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> tuple[str, int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                    body = await reader.readexactly(length)
                    reply = answer(head + body)
                    if reply is None:
                        break
                    writer.write(reply)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return "127.0.0.1", port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_content_length_responses_on_one_kept_alive_connection(serve: Serve) -> None:
    seen: list[bytes] = []

    def answer(request: bytes) -> bytes:
        seen.append(request)
        head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7"
        return head + b'\r\n\r\n{"a":1}'

    peer = await serve(answer)
    client = PeerClient(connect_timeout_s=1)
    for _ in range(3):
        response = await client.request(peer, REQUEST)
        assert (response.status, response.body) == (201, b'{"a":1}')
        assert ("Content-Type", "application/json") in response.headers
    assert seen == [REQUEST] * 3
    assert len(client._idle[peer]) == 1  # one connection served all three
    client.close()


async def test_chunked_responses_in_pieces(serve: Serve) -> None:
    body = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    )
    peer = await serve(lambda _: body)
    client = PeerClient(connect_timeout_s=1)
    response = await client.request(peer, REQUEST)
    assert (response.status, response.body) == (200, b"abcde")
    response = await client.request(peer, REQUEST)  # and the connection is still good
    assert response.body == b"abcde"
    client.close()


async def test_a_body_that_ends_with_the_connection_and_a_head_request(serve: Serve) -> None:
    peer = await serve(lambda _: None)
    client = PeerClient(connect_timeout_s=1)
    with pytest.raises(Lost):  # closed with no answer: the call may have run
        await client.request(peer, REQUEST)

    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"])
    peer = await serve(lambda _: next(answers, None))
    response = await client.request(peer, REQUEST, no_body=True)  # HEAD: no body follows
    assert (response.status, response.body) == (200, b"")
    client.close()


async def test_malformed_responses_are_lost_calls(serve: Serve) -> None:
    peer = await serve(lambda _: b"SMTP ready\r\n\r\n")
    client = PeerClient(connect_timeout_s=1)
    with pytest.raises(Lost, match="malformed response"):
        await client.request(peer, REQUEST)
    client.close()


async def test_nobody_listening_is_not_reached() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PeerClient(connect_timeout_s=1)
    with pytest.raises(NotReached, match="ConnectionRefused"):
        await client.request(("127.0.0.1", port), REQUEST)


async def test_a_peer_that_vanishes_without_a_word_is_found_out_by_tcp(serve: Serve) -> None:
    # A home whose node dies (or is cut off) sends no FIN and no RST: a call waiting for its
    # answer would wait forever. TCP keepalive probes (and a bound on unacknowledged writes)
    # end the connection, and the caller gets its 502 home_gateway_lost.
    peer = await serve(lambda request: b"HTTP/1.1 204 No Content\r\n\r\n")
    client = PeerClient(connect_timeout_s=1.0)
    try:
        await client.request(peer, REQUEST)
        [conn] = client._idle[peer]
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        idle_s = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval_s = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle_s + interval_s * probes <= 60
        assert 0 < sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) <= 60_000
    finally:
        client.close()


class _Homes:
    """The store's side of the Router: a fixed list of homes."""

    def __init__(self, homes: list[GatewayHome]) -> None:
        self.homes = homes

    async def list_gateway_homes(self, silent_s: float) -> list[GatewayHome]:
        return self.homes


async def test_a_suspect_home_comes_back_only_once_it_takes_a_connection() -> None:
    # A home that refused a connection is left out; when its time is up, a connection is
    # tried off the call path and it is back only if one is taken. (It used to come back
    # blindly: during a partition every `silent_s` a call paid the connect timeout, and the
    # home's functions moved here and back, instances and all.)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens yet: refused
        me = GatewayHome(id=uuid.uuid4(), name="me", address="http://127.0.0.1:1")
        peer = GatewayHome(id=uuid.uuid4(), name="peer", address=f"http://127.0.0.1:{port}")
        now = [0.0]
        router = Router(
            cast(Store, _Homes([me, peer])),
            run_id=me.id,
            name="me",
            settings=RoutingSettings(),
            silent_s=15,
            token="t",
            registry=CollectorRegistry(),
            clock=lambda: now[0],
        )
        router.address = me.address
        try:
            await router.refresh()
            [home] = [h for h in router.homes if h.name == "peer"]
            assert router.next_home(home, "f", ConnectionRefusedError()) is None
            assert [h.name for h in router.homes] == ["me"]

            now[0] = 16.0  # time is up, and it still refuses: left out, for another 15 s
            await router.refresh()
            assert [h.name for h in router.homes] == ["me"]
            [probe] = router._probes.values()  # the connection tried, off the call path
            async with asyncio.timeout(5):
                await probe
            assert [h.name for h in router.homes] == ["me"]
            await router.refresh()
            assert not router._probes  # not before its new time is up
            now[0] = 32.0
            s.listen()  # it takes connections again: back at once, no call needed
            changed = router.changed
            await router.refresh()
            async with asyncio.timeout(5):
                await changed.wait()
            assert sorted(h.name for h in router.homes) == ["me", "peer"]
            accepted, _ = s.accept()  # the probe's connection, kept for the next call
            accepted.close()
            assert len(router._peers._idle[("127.0.0.1", port)]) == 1
        finally:
            await router.close()
