"""Regressions found in review: nothing a request does may leak a slot, loop a restart, or
resurrect deleted code; odd bytes in requests and logs are handled, not fatal."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import psutil

from tests.conftest import PlatformFactory, Running, shared

SLOW = textwrap.dedent("""
    import time

    def handler(event, context):
        time.sleep(event.get("sleep", 0))
        return "old"
""")


async def raw_request(url: str, raw: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def test_undecodable_header_bytes_neither_fail_nor_leak_the_slot(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool={"max_instances": 1, "queue_timeout_s": 5}) as running:
        await running.deploy_ok(
            "echo",
            textwrap.dedent("""
            def handler(event, context):
                return context.headers.get("X-Bad")
        """),
        )
        for _ in range(3):
            reply = await raw_request(
                running.url,
                b"POST /fn/echo HTTP/1.1\r\nHost: x\r\n"
                b"X-Bad: \xff\xfe\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n",
            )
            assert reply.startswith(b"HTTP/1.1 200")
            assert "\ufffd".encode() in reply
        assert (await running.call("echo", {})).status == 200


async def test_a_version_that_fails_to_start_backs_off_instead_of_looping(
    make_platform: PlatformFactory,
    tmp_path: Path,
) -> None:
    flag = shared(tmp_path) / "broken"
    # Without templates: a fork of one would not run the module-level code again.
    async with make_platform(pool={"keep_alive_s": 0.2}, templates=False) as running:
        await running.deploy_ok(
            "flaky",
            textwrap.dedent("""
            import os
            if os.path.exists(os.environ["FLAG"]):
                raise RuntimeError("the config server is down")

            def handler(event, context):
                return "ok"
        """),
            env={"FLAG": str(flag)},
        )
        scheduler = running.platform.scheduler
        await scheduler.wait_until(lambda: not scheduler.instances_of("flaky"), 10)
        flag.touch()
        before = scheduler.starts_total
        for _ in range(5):
            response = await running.call("flaky", {})
            assert response.status == 502
            error = (await response.json())["error"]
            assert error["code"] == "start_failed"
            assert "the config server is down" in error["message"]
        # One failed start; the other calls failed fast during the back-off.
        assert scheduler.starts_total - before <= 2

        flag.unlink()
        await asyncio.sleep(scheduler.start_backoff_remaining_s(("flaky", 1)))
        assert (await running.call("flaky", {})).status == 200


async def test_delete_fails_queued_calls_and_the_old_code_never_comes_back(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool={"max_instances": 1}) as running:
        await running.deploy_ok("f", SLOW)
        busy = asyncio.create_task(running.call("f", {"sleep": 0.5}))
        scheduler = running.platform.scheduler
        await scheduler.wait_until(lambda: any(i.busy for i in scheduler.instances_of("f")), 10)
        queued = asyncio.create_task(running.call("f", {}))
        await scheduler.wait_until(lambda: scheduler.waiting(("f", 1)) == 1, 10)
        status, _ = await running.admin("DELETE", "/v1/functions/f")
        assert status == 200
        assert (await queued).status == 502
        assert (await busy).status == 200  # the running call was allowed to finish
        await scheduler.wait_until(lambda: not scheduler.instances_of("f"), 10)

        await running.deploy_ok("f", SLOW.replace('"old"', '"new"'))
        assert await (await running.call("f:1", {})).text() == "new"


async def test_odd_characters_in_logs_are_kept_readable(running: Running) -> None:
    await running.deploy_ok(
        "odd",
        textwrap.dedent("""
        def handler(event, context):
            print("nul:\\x00 surrogate:\\udc80")
            raise ValueError("bad\\x00value")
    """),
    )
    response = await running.call("odd", {})
    assert response.status == 500
    activation_id = (await response.json())["error"]["activation_id"]
    status, activation = await running.admin("GET", "/v1/functions/odd/activations")
    assert status == 200
    [record] = activation["activations"]
    assert record["id"] == activation_id
    assert "nul:\\0 surrogate:\ufffd" in record["logs"]
    assert record["error"]["message"] == "bad\\0value"


async def test_processes_a_handler_forks_are_stopped_with_its_instance(running: Running) -> None:
    await running.deploy_ok(
        "forker",
        textwrap.dedent("""
        import subprocess

        def handler(event, context):
            child = subprocess.Popen(["sleep", "300"])
            return child.pid
    """),
    )
    assert (await running.call("forker", {})).status == 200
    # The pid it returns is the one in its own PID namespace: find the child on this side.
    [instance] = running.platform.scheduler.instances_of("forker")
    instance_pid = running.platform.scheduler.pid_of(instance)
    assert instance_pid is not None
    tree = psutil.Process(instance_pid).children(recursive=True)
    children = [p for p in tree if p.cmdline() == ["sleep", "300"]]
    assert len(children) == 1, [p.cmdline() for p in tree]
    [child] = children
    assert child.is_running()
    status, _ = await running.admin("DELETE", "/v1/functions/forker")
    assert status == 200
    _, alive = psutil.wait_procs([child], timeout=10)
    assert not alive
