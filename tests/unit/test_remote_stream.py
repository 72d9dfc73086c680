"""The gateway's view of the Kubernetes scheduler (`scheduler/backends/remote.py`): its event
stream, which carries the pods' exit codes, comes back as soon as the leader answers again."""

from __future__ import annotations

import asyncio

from aiohttp import web

from scheduler.backends.remote import RemoteBackend


async def test_the_event_stream_reconnects_once_the_leader_answers_not_after_its_back_off() -> None:
    refused = 0
    five_refused = asyncio.Event()
    elected = False
    stop = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        nonlocal refused
        if not elected:  # (before an election: every replica says it does not lead)
            refused += 1
            if refused == 5:
                five_refused.set()
            return web.json_response({"error": "this scheduler is not the leader"}, status=503)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"pods": []}\n')
        await stop.wait()  # (held open until the test ends)
        return response

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"leader": True})

    app = web.Application()
    app.router.add_get("/v1/gateways/{gateway}/events", events)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    async def locate() -> str:
        return f"http://127.0.0.1:{port}"

    backend = RemoteBackend(locate, "token", "gw-1")
    await backend.start()
    try:
        # Five refusals: the follower now backs off 3.2 s before it tries again.
        await asyncio.wait_for(five_refused.wait(), 30)
        elected = True
        assert await backend._request("GET", "/healthz") == {"leader": True}
        await asyncio.wait_for(backend.connected.wait(), 1.5)  # (not 3.2 s later)
        assert refused == 5
    finally:
        stop.set()
        await backend.close()
        await runner.cleanup()
