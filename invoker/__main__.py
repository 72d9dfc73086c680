"""Entry point of an invoker instance: `python -m invoker [--host H] [--port P]`.

Prints the port it listens on as the first line of stdout, then sends stdout to stderr. With
`--exit-with-stdin` it exits when its stdin closes, so a local instance never outlives its parent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from invoker.context import install_capture
from invoker.runtime import Runtime


async def _main(host: str, port: int, exit_with_stdin: bool) -> None:
    runtime = Runtime()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(runtime.serve, host, port, limit=1 << 20)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{bound}\n")
    sys.stdout.flush()
    os.dup2(2, 1)
    if exit_with_stdin:

        class _Watch(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                stop.set()

        await loop.connect_read_pipe(_Watch, sys.stdin)
    install_capture()
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m invoker")
    parser.add_argument("--host", default=os.environ.get("EMBER_INVOKER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("EMBER_INVOKER_PORT", "0")))
    parser.add_argument("--exit-with-stdin", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(_main(args.host, args.port, args.exit_with_stdin))
    else:
        uvloop.run(_main(args.host, args.port, args.exit_with_stdin))


if __name__ == "__main__":
    main()
