"""What an instance may use up: processes, memory (children and /dev/shm included), time
after its function is gone, the platform's log, the gateway's memory (attack 7 of
docs/security.md)."""

from __future__ import annotations

import signal
import textwrap
import time
from typing import Any

import psutil
import pytest

from tests.security.conftest import Platform

pytestmark = [pytest.mark.timeout(120)]


# -- 7. resources --------------------------------------------------------------------------------


def test_7a_fork_bomb_meets_the_pids_limit(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os, time
        def handler(event, context):
            children, error = [], None
            for _ in range(2000):
                try:
                    pid = os.fork()
                except OSError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    break
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
            return {"forked": len(children), "error": error}
    """)
    seen = platform.attack("forkbomb", source)
    assert seen["forked"] < 300, seen
    assert seen["error"] is not None, seen
    platform.client.api("DELETE", "/v1/functions/forkbomb")
    platform.healthy()


def test_7b_memory_limit_holds_across_children_and_shm(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os
        def handler(event, context):
            if event.get("shm"):
                try:
                    with open("/dev/shm/fill", "wb") as f:
                        for _ in range(1024):
                            f.write(b"x" * (1 << 20))
                except OSError as exc:
                    return {"shm": f"{type(exc).__name__}: {exc}"}
                return {"shm": "filled 1 GiB"}
            children = []
            for _ in range(4):  # four children of 100 MiB each under a 128 MiB limit
                pid = os.fork()
                if pid == 0:
                    block = bytearray(100 << 20)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    import time; time.sleep(1)
                    os._exit(0)
                children.append(pid)
            return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    """)
    platform.deploy("hog", source, memory="128Mi")
    shm = platform.call("hog", {"shm": True})
    assert shm.status == 200, shm.body
    assert "No space left" in shm.json()["shm"], shm.body
    reply = platform.call("hog")
    # The cgroup's OOM killer stops children past the limit (or the whole instance: a 502).
    if reply.status == 200:
        assert -signal.SIGKILL in reply.json(), reply.json()
    else:
        assert reply.status == 502, reply.body
    platform.healthy()


def test_7c_nothing_outlives_the_function(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os, time
        def handler(event, context):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(600)
                os._exit(0)
            os.wait()
            return os.getuid()
    """)
    uid = platform.attack("escape", source)

    def of_the_function() -> list[psutil.Process]:
        return [
            p
            for p in psutil.process_iter(["uids"])
            if p.info["uids"] and p.info["uids"].real == uid
        ]

    assert len(of_the_function()) >= 2  # the instance and the escaped grandchild
    platform.client.api("DELETE", "/v1/functions/escape")
    deadline = time.monotonic() + 10
    while of_the_function() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not of_the_function()
    platform.healthy()


def test_7d_output_floods_stay_in_the_activation(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os
        def handler(event, context):
            chunk = b"y" * (1 << 20)
            for _ in range(100):
                os.write(1, chunk)
                os.write(2, chunk)
            return "flooded"
    """)
    before = platform.log_bytes()
    assert platform.attack("flood", source) == "flooded"
    deadline = time.monotonic() + 10  # the activation record is written in batches
    records: list[dict[str, Any]] = []
    while not records and time.monotonic() < deadline:
        records = platform.client.api("GET", "/v1/functions/flood/activations?limit=1")[
            "activations"
        ]
    assert records, "no activation record"
    assert len(records[0].get("logs") or "") <= 70 * 1024
    # 200 MB were written to fds 1 and 2: none of it reached the platform's own log (the
    # instance's fds are a pipe its runtime drains; the gateway's stderr is not among them).
    assert platform.log_bytes() - before < 64 * 1024
    platform.healthy()


def test_7e_a_huge_response_is_refused_and_the_gateway_stays_small(platform: Platform) -> None:
    source = textwrap.dedent("""
        def handler(event, context):
            return b"z" * (200 << 20)
    """)
    rss_before = psutil.Process(platform.process.pid).memory_info().rss
    platform.deploy("huge", source, memory="1Gi")
    reply = platform.call("huge")
    assert reply.status == 502, reply.body[:500]
    assert reply.json()["error"]["code"] == "response_too_large"
    grown = psutil.Process(platform.process.pid).memory_info().rss - rss_before
    assert grown < 50 << 20, grown
    platform.healthy()
