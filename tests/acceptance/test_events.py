"""Nothing accepted is lost: the platform is killed (SIGKILL) in the middle of a stream of
deliveries and started again; every accepted event is delivered at least once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from fn.client import Client, ClientError
from tests.conftest import shared

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "acceptance-token"

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

SLOW_RECORDER = textwrap.dedent("""
    import json, time

    def handler(event, context):
        time.sleep(0.03)
        with open(context.config["OUT"], "a") as f:
            f.write(json.dumps(event) + "\\n")
        return "ok"
""")


@contextmanager
def gateway(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m gateway` (what `fn up` runs) on a free port; yields it and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway"], env=env, cwd=ROOT, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    stderr = process.stderr
    lines: list[bytes] = []
    for line in stderr:
        lines.append(line)
        if line.startswith(b"Ember is up at "):
            url = line.split()[4].decode()
            break
    else:
        stderr.close()
        pytest.fail(f"the gateway exited with {process.wait()}: {b''.join(lines).decode()}")
    drain = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
    drain.start()
    children = psutil.Process(process.pid).children(recursive=True)
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        drain.join(timeout=5)
        stderr.close()
        # (process_iter's attrs: a process that exits while listed is no error)
        children += [c for c in psutil.process_iter(["ppid"]) if c.info["ppid"] == process.pid]
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"processes outlived the gateway: {alive}"


def publish(client: Client, n: int) -> bool:
    """Publish event n; True when the platform accepted (committed) it."""
    try:
        reply = client.request(
            "POST",
            "/v1/events/stream",
            json.dumps({"n": n}).encode(),
            {"Content-Type": "application/json"},
        )
    except ClientError:
        return False
    return reply.status == 202


def test_sigkill_mid_stream_loses_no_accepted_event(database_url: str, tmp_path: Path) -> None:
    out = shared(tmp_path) / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    env.update(
        FN_STATE_DIR=str(tmp_path / "state"),
        FN_PORT="0",
        FN_TOKEN=TOKEN,
        FN_EXPOSE=str(shared(tmp_path)),
        DATABASE_URL=database_url,
        FN_DELIVERY_LEASE="1s",
        FN_RETRY_BASE="100ms",
    )
    handler = tmp_path / "rec.py"
    handler.write_text(SLOW_RECORDER)
    accepted: list[int] = []
    total = 400

    with gateway(env) as (process, url):
        client = Client(url, TOKEN)
        client.api(
            "POST",
            "/v1/functions",
            {
                "name": "rec",
                "source": SLOW_RECORDER,
                "filename": "rec.py",
                "env": {"OUT": str(out)},
                "timeout": "2s",
            },
        )
        client.api("PUT", "/v1/topics/stream")
        client.api("POST", "/v1/functions/rec/triggers", {"topic": "stream"})
        n = 0
        while n < total // 2:
            if publish(client, n):
                accepted.append(n)
            n += 1
        # Deliveries lag behind (30 ms each): many are queued or in flight.
        delivered_before = len(out.read_text().splitlines()) if out.exists() else 0
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert delivered_before < len(accepted), "the kill came after the stream had drained"

    with gateway(env) as (_process, url):
        client = Client(url, TOKEN)
        while n < total:
            if publish(client, n):
                accepted.append(n)
            n += 1
        deadline = time.monotonic() + 60
        while True:
            seen = Counter(json.loads(line)["n"] for line in out.read_text().splitlines())
            missing = set(accepted) - set(seen)
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} accepted events not delivered"
            time.sleep(0.1)
        metrics = client.request("GET", "/metrics", admin=False).body.decode()

    duplicates = sum(count - 1 for count in seen.values())
    redelivered = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ember_redeliveries_total{")
    )
    print(
        f"accepted {len(accepted)} of {total}; delivered before the kill "
        f"{delivered_before}; duplicates {duplicates}; redeliveries counted {redelivered:g}"
    )
    assert len(accepted) == total  # the kill refused nothing: it fell between two publishes
    assert set(seen) == set(accepted)
    # A duplicate can only come from a delivery whose lease ran out: each one is counted.
    assert duplicates <= redelivered
