"""What each handler style adds to a warm call (`make bench-styles`).

For every style, an echo handler written as that platform documents it (1 KB of JSON in, the
same JSON out), measured two ways in one run, next to Ember's own style:

- adapter: the style's `run` in this process, called in a loop (what the adapter itself costs
  per call: building the platform's event and context, mapping the result back);
- direct: a warm invoker instance over its wire protocol, sequential calls (what a caller sees,
  without the gateway's noise), in alternating rounds, medians of the rounds.

Styles whose requests are Flask's or whose apps are Starlette's need those packages: they are
installed once into ~/.cache/ember/bench-styles-env (pip), as a deploy would install them.

    python -m bench.styles [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import orjson

from bench.load import sequential_direct
from bench.platform import Server
from invoker import styles
from invoker.context import Context
from invoker.protocol import Connection

ROOT = Path(__file__).resolve().parent
ENV_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ember" / "bench-styles-env"
)
PACKAGES = ("flask", "starlette")
BODY = orjson.dumps({"items": ["x" * 40] * 20, "n": 1})  # about 1 KB

HANDLERS: dict[str, tuple[str, str]] = {
    "ember": ("handler", "def handler(event, context):\n    return event\n"),
    "lambda": (
        "lambda_handler",
        "def lambda_handler(event, context):\n"
        "    return {'statusCode': 200, 'headers': {'Content-Type': 'application/json'},\n"
        "            'body': event['body']}\n",
    ),
    "openwhisk": (
        "main",
        "def main(args):\n"
        "    return {k: v for k, v in args.items() if not k.startswith('__ow_')}\n",
    ),
    "openfaas": (
        "handle",
        "def handle(event, context):\n"
        "    return {'statusCode': 200, 'body': event.body.decode(),\n"
        "            'headers': {'Content-Type': 'application/json'}}\n",
    ),
    "fission": (
        "main",
        "from flask import request\n\n"
        "def main():\n    return request.get_data(), 200, {'Content-Type': 'application/json'}\n",
    ),
    "gcf": ("echo", "def echo(request):\n    return request.get_json()\n"),
    "wsgi": (
        "app",
        "def app(environ, start_response):\n"
        "    body = environ['wsgi.input'].read(int(environ.get('CONTENT_LENGTH') or 0))\n"
        "    start_response('200 OK', [('Content-Type', 'application/json')])\n"
        "    return [body]\n",
    ),
    "asgi": (
        "app",
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n        return\n"
        "    body = (await receive())['body']\n"
        "    await send({'type': 'http.response.start', 'status': 200,\n"
        "                'headers': [(b'content-type', b'application/json')]})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n",
    ),
    "knative": (
        "new",
        "class Function:\n"
        "    async def handle(self, scope, receive, send):\n"
        "        body = (await receive())['body']\n"
        "        await send({'type': 'http.response.start', 'status': 200,\n"
        "                    'headers': [(b'content-type', b'application/json')]})\n"
        "        await send({'type': 'http.response.body', 'body': body})\n\n"
        "def new():\n    return Function()\n",
    ),
}


def ensure_env() -> Path:
    if not (ENV_DIR / "flask").is_dir() or not (ENV_DIR / "starlette").is_dir():
        ENV_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(ENV_DIR), *PACKAGES],
            check=True,
        )
    return ENV_DIR


def available() -> list[str]:
    from invoker.styles import STYLE_MODULES

    here = Path(styles.__file__).parent
    out = []
    for style in HANDLERS:
        if not (here / f"{STYLE_MODULES[style]}.py").is_file():
            print(f"(style {style} is not built yet: skipped)", file=sys.stderr)
            continue
        out.append(style)
    return out


def adapter_us_isolated(style: str, n: int, env: Path) -> float:
    """`adapter_us` in a process of its own, as an instance runs one style: what one style
    imports (Flask...) must not change what another costs."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.styles", "--adapter", style, "--n", str(n)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(env)},
    )
    return float(out.stdout.strip().splitlines()[-1])


def _incoming() -> styles.Incoming:
    return styles.Incoming(
        body=BODY,
        method="POST",
        path="/",
        headers=[("Content-Type", "application/json"), ("Host", "127.0.0.1:8080")],
        content_type="application/json",
        context=Context(
            function="bench", version=1, activation_id="a", deadline=time.monotonic() + 30
        ),
    )


def _bind(style: str) -> styles.Bound:
    entry, source = HANDLERS[style]
    module = types.ModuleType(f"bench_{style}")
    module.__file__ = f"/bench/{style}.py"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    return styles.bind(
        getattr(module, entry),
        styles.BindInfo(
            style=style,
            entry=entry,
            module=module,
            function="bench",
            version=1,
            memory_mb=256,
            timeout_s=30,
        ),
    )


async def adapter_us(style: str, n: int) -> float:
    """Median microseconds of one `run` (in this process), over 5 batches of n calls."""
    bound = _bind(style)
    if bound.startup is not None:
        await bound.startup()
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            call = _incoming()
            if bound.is_async:
                status, _, body = await bound.run(call)
            else:
                status, _, body = bound.run(call)
        batches.append((time.perf_counter() - t0) / n * 1e6)
        if status != 200 or orjson.loads(body) != orjson.loads(BODY):
            raise RuntimeError(f"{style} did not echo: {status} {body[:200]!r}")
    return statistics.median(batches)


async def _specialize(port: int, style: str, paths: list[str]) -> None:
    entry, source = HANDLERS[style]
    conn = await Connection.open("127.0.0.1", port)
    try:
        reply, _ = await conn.call(
            {
                "op": "specialize",
                "function": f"bench-{style}",
                "version": 1,
                "filename": "handler.py",
                "source": source,
                "entry": entry,
                "style": style,
                "env": {},
                "timeout_s": 30,
                "memory_bytes": 256 << 20,
                "concurrency": 1,
                "paths": paths,
            }
        )
    finally:
        conn.close()
    if not reply.get("ok"):
        raise RuntimeError(f"specialize {style} failed: {reply}")


async def direct_ms(ports: dict[str, int], n: int, rounds: int) -> dict[str, tuple[float, float]]:
    """(p50, p99) in ms per style: medians over alternating rounds of n sequential calls."""
    p50s: dict[str, list[float]] = {s: [] for s in ports}
    p99s: dict[str, list[float]] = {s: [] for s in ports}
    for _ in range(rounds):
        for style, port in ports.items():
            samples = sorted(await sequential_direct("127.0.0.1", port, BODY, n, warmup=100))
            p50s[style].append(samples[len(samples) // 2] * 1000)
            p99s[style].append(samples[int(len(samples) * 0.99)] * 1000)
    return {s: (statistics.median(p50s[s]), statistics.median(p99s[s])) for s in ports}


async def main_async(quick: bool) -> dict[str, Any]:
    env = ensure_env()
    sys.path.insert(0, str(env))
    names = available()
    n_adapter, n_direct, rounds = (2000, 500, 3) if quick else (10000, 2000, 5)
    adapter = {s: adapter_us_isolated(s, n_adapter, env) for s in names}
    servers = {s: Server.start("invoker") for s in names}
    try:
        for style, server in servers.items():
            await _specialize(server.port, style, [str(env)])
        direct = await direct_ms({s: v.port for s, v in servers.items()}, n_direct, rounds)
    finally:
        for server in servers.values():
            server.stop()
    base_us, (base_p50, _) = adapter["ember"], direct["ember"]
    rows = []
    print(
        f"{'style':<10} {'adapter us':>10} {'+us':>7} {'direct p50':>10} {'p99':>7} {'+ms p50':>8}"
    )
    for s in names:
        p50, p99 = direct[s]
        rows.append(
            {
                "style": s,
                "adapter_us": round(adapter[s], 1),
                "adapter_added_us": round(adapter[s] - base_us, 1),
                "direct_p50_ms": round(p50, 3),
                "direct_p99_ms": round(p99, 3),
                "direct_added_p50_ms": round(p50 - base_p50, 3),
            }
        )
        print(
            f"{s:<10} {adapter[s]:>10.1f} {adapter[s] - base_us:>7.1f} {p50:>10.3f} "
            f"{p99:>7.3f} {p50 - base_p50:>8.3f}"
        )
    return {"rows": rows, "calls_per_round": n_direct, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.styles")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--adapter", help=argparse.SUPPRESS)  # one style's adapter, alone
    parser.add_argument("--n", type=int, default=10000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.adapter:
        print(asyncio.run(adapter_us(args.adapter, args.n)))
        return
    result = asyncio.run(main_async(args.quick))
    out = ROOT / "results" / "styles.json"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
