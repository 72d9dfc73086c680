"""The floor: a bare aiohttp echo server on uvloop, what one HTTP hop costs on this machine.

`python -m bench.echo_server` prints its port on the first line of stdout.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop
from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/json")


async def serve(sock: socket.socket) -> None:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await asyncio.Event().wait()


def main() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    sys.stdout.write(f"{sock.getsockname()[1]}\n")
    sys.stdout.flush()
    uvloop.run(serve(sock))


if __name__ == "__main__":
    main()
