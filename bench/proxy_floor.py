"""The two-hop floor: what a proxy with none of Ember's logic costs, for comparison with the
gateway in the same run.

`python -m bench.proxy_floor [N]` starts N invoker processes (not sandboxed), specializes the
trivial echo handler in each, and serves `/fn/{name}` with a bare aiohttp application (uvloop)
that forwards each request over the invoker wire protocol to a free instance (waiting in line
when all are busy) and answers with its reply: no function cache, scheduler, policy, activation
record, metrics, deadlines or connection limits. Prints its port on the first line of stdout;
stops its invokers when terminated.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import socket
import sys

import uvloop
from aiohttp import web

from bench.platform import Server, specialize
from invoker.protocol import Connection, InvokeRequest

ECHO = "def handler(event, context):\n    return event\n"


async def serve(sock: socket.socket, instances: int) -> None:
    invokers = [Server.start("invoker") for _ in range(instances)]
    try:
        free: collections.deque[Connection] = collections.deque()
        for invoker in invokers:
            await specialize(invoker.port, ECHO)
            free.append(await Connection.open("127.0.0.1", invoker.port))
        waiting: collections.deque[asyncio.Future[Connection]] = collections.deque()

        async def forward(request: web.Request) -> web.Response:
            body = await request.read()
            if free:
                conn = free.pop()
            else:
                fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
                waiting.append(fut)
                conn = await fut
            meta: InvokeRequest = {
                "op": "invoke",
                "id": "bench",
                "timeout_s": 30,
                "method": request.method,
                "path": "/",
                "query": "",
                "headers": list(request.headers.items()),
                "content_type": request.headers.get("Content-Type", ""),
            }
            try:
                reply, out = await conn.call(meta, body)
            finally:
                if waiting:
                    waiting.popleft().set_result(conn)
                else:
                    free.append(conn)
            response = web.Response(status=reply.get("status", 200), body=out)
            for name, value in reply.get("headers", []):
                response.headers.add(name, value)
            return response

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/fn/{name}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        sys.stdout.write(f"{sock.getsockname()[1]}\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
    finally:
        for invoker in invokers:
            invoker.stop()


def main() -> None:
    instances = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    sock = socket.create_server(("127.0.0.1", 0))
    uvloop.run(serve(sock, instances))


if __name__ == "__main__":
    main()
