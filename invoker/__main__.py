"""Entry point of an invoker: `python -m invoker [--host H] [--port P] [--zygote]`, or
`python -m invoker --confine SPEC -- COMMAND...` to run a command inside an instance's walls.

As an instance, it prints the port it listens on as the first line of stdout, then sends stdout
to stderr; with `--exit-with-stdin` it exits when its stdin closes, so a local instance never
outlives its parent. With `--zygote` it becomes a zygote (see `invoker.zygote`).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from invoker.protocol import listen
from invoker.runtime import run_instance


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m invoker")
    parser.add_argument(
        "--host",
        default=os.environ.get("EMBER_INVOKER_HOST", "127.0.0.1"),
        help="address to listen on, or unix:/path for a Unix socket",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("EMBER_INVOKER_PORT", "0")))
    parser.add_argument("--exit-with-stdin", action="store_true")
    parser.add_argument(
        "--zygote", action="store_true", help="fork instances on request instead of serving calls"
    )
    parser.add_argument(
        "--confine",
        metavar="SPEC",
        help="run the command after -- inside an instance's walls (JSON spec)",
    )
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.confine:
        import json

        from invoker.sandbox import confine

        if not args.command:
            parser.error("--confine needs a command after --")
        confine(json.loads(args.confine), args.command)
    if args.zygote:
        from invoker.zygote import run_zygote

        run_zygote()
        return
    address = args.host if args.host.startswith("unix:") else f"{args.host}:{args.port}"
    sock = listen(address)
    port = 0 if sock.family == socket.AF_UNIX else sock.getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    os.dup2(2, 1)
    watch = sys.stdin if args.exit_with_stdin else None
    run_instance(sock, watch_stdin=watch)


if __name__ == "__main__":
    main()
