"""Start and stop what the benchmark measures: the floor server, gateways, a lone invoker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from invoker.protocol import Connection

TOKEN = "bench-token"


def bench_settings() -> dict[str, str]:
    """FN_* settings for every gateway of a run (`python -m bench.run --set FN_X=Y`, passed in
    EMBER_BENCH_SET as "FN_X=Y,FN_Z=W"): what the environment's own FN_* variables cannot be
    (they are stripped, so that a shell's settings do not skew a run unnoticed)."""
    pairs = [p for p in os.environ.get("EMBER_BENCH_SET", "").split(",") if p]
    return dict(p.split("=", 1) for p in pairs)


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    ui: str = ""
    """The dashboard (`http://127.0.0.1:PORT/ui`, its own origin; before 2026-12-01 it was
    `{url}/ui`)."""

    @classmethod
    def start(cls, state_dir: Path, database_url: str, **env: str) -> Gateway:
        """A gateway of this checkout, or of EMBER_BENCH_CHECKOUT's (`bench.run --checkout`)."""
        checkout = os.environ.get("EMBER_BENCH_CHECKOUT")
        return cls.start_in(Path(checkout) if checkout else None, state_dir, database_url, env)

    @classmethod
    def start_in(
        cls, cwd: Path | None, state_dir: Path, database_url: str, env: Mapping[str, str]
    ) -> Gateway:
        """Start `python -m gateway`; with `cwd`, the gateway of that checkout of Ember (it
        comes first on the module path) rather than this one."""
        state_dir.mkdir(parents=True, exist_ok=True)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
        full_env.update(
            FN_STATE_DIR=str(state_dir),
            FN_PORT="0",
            FN_HOST="127.0.0.1",
            FN_TOKEN=TOKEN,
            DATABASE_URL=database_url,
            FN_ISOLATION=os.environ.get("EMBER_BENCH_ISOLATION", "auto"),
        )
        if cwd is not None:
            full_env["PYTHONPATH"] = str(cwd)
        full_env.update(bench_settings())
        full_env.update(env)
        log = state_dir / "gateway.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=full_env, stderr=subprocess.PIPE, cwd=cwd
        )
        assert process.stderr is not None
        stderr = process.stderr
        sink = log.open("wb", buffering=0)  # (read while it runs: bench.templates)
        for line in stderr:
            sink.write(line)
            if line.startswith(b"Ember is up at "):
                url = line.split()[4].decode()
                _, said, ui = line.decode().rpartition("dashboard: ")
                ui = ui.strip() if said else f"{url}/ui"
                break
        else:
            raise RuntimeError(f"gateway failed to start; see {log}")
        threading.Thread(target=lambda: [sink.write(x) for x in stderr], daemon=True).start()
        return cls(url, process, log, ui)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class Server:
    """A process that prints its port first (the floor echo server, or an invoker)."""

    port: int
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, *args: str) -> Server:
        process = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE)
        assert process.stdout is not None
        port = int(process.stdout.readline())
        return cls(port, process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def specialize(port: int, source: str, name: str = "bench") -> None:
    conn = await Connection.open("127.0.0.1", port)
    try:
        reply, _ = await conn.call(
            {
                "op": "specialize",
                "function": name,
                "version": 1,
                "filename": "handler.py",
                "source": source,
                "entry": "handler",
                "env": {},
                "timeout_s": 30,
                "memory_bytes": 256 << 20,
                "concurrency": 1,
            }
        )
    finally:
        conn.close()
    if not reply.get("ok"):
        raise RuntimeError(f"specialize failed: {reply}")


def pss_bytes(pid: int) -> int:
    """Proportional set size: private memory plus a fair share of what is shared."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def tree_pss(pid: int) -> dict[str, Any]:
    """PSS of a process and its descendants; one that exits meanwhile (an instance scaled to
    zero, a namespace's init going with it) counts as nothing."""
    root = psutil.Process(pid)
    total = counted = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += pss_bytes(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        counted += 1
    return {"processes": counted, "pss_bytes": total}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)
