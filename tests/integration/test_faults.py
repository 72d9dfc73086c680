"""Bad input and faults: each gets a clear error, and the platform carries on."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from typing import Any

import psutil

from tests.conftest import PlatformFactory, Running

PID = textwrap.dedent("""
    import os, time, ctypes, uuid

    INSTANCE = uuid.uuid4().int >> 80  # once per instance (each is PID 2 in its sandbox)

    def handler(event, context):
        if event.get("sleep"):
            time.sleep(event["sleep"])
        if event.get("exit"):
            os._exit(3)
        if event.get("segfault"):
            ctypes.string_at(0)
        return INSTANCE
""")


async def test_timeout_is_a_504_naming_the_limit_and_the_instance_is_replaced(
    running: Running,
) -> None:
    await running.deploy_ok("slow", PID, timeout="500ms")
    first_pid = await (await running.call("slow", {})).json()

    response = await running.call("slow", {"sleep": 30})
    assert response.status == 504
    error = (await response.json())["error"]
    assert error["code"] == "timeout"
    assert "timeout of 0.5s" in error["message"]
    assert "--timeout" in error["message"]

    response = await running.call("slow", {})
    assert response.status == 200
    assert await response.json() != first_pid
    _, activation = await running.admin("GET", f"/v1/activations/{error['activation_id']}")
    assert activation["status"] == "timeout"


async def test_instance_that_exits_mid_call_is_a_502_and_replaced(running: Running) -> None:
    await running.deploy_ok("crash", PID)
    first_pid = await (await running.call("crash", {})).json()
    response = await running.call("crash", {"exit": True})
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "instance_died"
    assert "exit code 3" in error["message"]

    response = await running.call("crash", {})
    assert response.status == 200
    assert await response.json() != first_pid


async def test_segfault_is_a_502_naming_the_signal(running: Running) -> None:
    await running.deploy_ok("crash", PID)
    response = await running.call("crash", {"segfault": True})
    assert response.status == 502
    assert "SIGSEGV" in (await response.json())["error"]["message"]
    assert (await running.call("crash", {})).status == 200


async def test_an_instance_killed_while_idle_is_replaced(running: Running) -> None:
    await running.deploy_ok("pid", PID)
    pid = await (await running.call("pid", {})).json()
    scheduler = running.platform.scheduler
    [instance] = scheduler.instances_of("pid")
    host_pid = scheduler.pid_of(instance)
    assert host_pid is not None
    # The process running the handler: the innermost one (supervisor > namespace init > it).
    *_, invoker = [psutil.Process(host_pid), *psutil.Process(host_pid).children(recursive=True)]
    os.kill(invoker.pid, signal.SIGKILL)
    await scheduler.wait_until(lambda: instance.id not in scheduler.pool.instances, 10)
    response = await running.call("pid", {})
    assert response.status == 200
    assert await response.json() != pid


async def test_body_over_the_limit_is_a_413(make_platform: PlatformFactory) -> None:
    async with make_platform(max_body_bytes=4096) as running:
        await running.deploy_ok("pid", PID)
        response = await running.call("pid", data=b"x" * 5000)
        assert response.status == 413
        error = (await response.json())["error"]
        assert error["code"] == "payload_too_large"
        assert "4096 bytes" in error["message"]
        assert (await running.call("pid", {"pad": "x" * 3900})).status == 200


async def test_admin_api_needs_the_token(running: Running) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        async with running.http.get(f"{running.url}/v1/functions", headers=headers) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"]["code"] == "unauthorized"
    async with running.http.post(
        f"{running.url}/v1/functions", json={"name": "x", "source": "def handler(e, c): pass"}
    ) as r:
        assert r.status == 401
    status, data = await running.admin("GET", "/v1/functions")
    assert (status, data) == (200, {"functions": []})


async def test_invalid_config_is_rejected_before_anything_is_stored(running: Running) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timeout": "-1"}, 'invalid --timeout "-1"'),
        ({"timeout": "10 parsecs"}, "--timeout"),
        ({"memory": "3x"}, 'invalid --memory "3x"'),
        ({"memory": "1Mi"}, "--memory"),
        ({"concurrency": 0}, "--concurrency"),
        ({"env": {"1BAD": "x"}}, "--env"),
    ]
    for config, message in cases:
        response = await running.deploy("hello", "def handler(e, c): return 1", **config)
        assert response.status == 400, config
        assert message in (await response.json())["error"]["message"]
    response = await running.deploy("Bad Name", "def handler(e, c): return 1")
    assert response.status == 400
    _, data = await running.admin("GET", "/v1/functions")
    assert data == {"functions": []}


async def test_syntax_error_names_file_and_line(running: Running) -> None:
    response = await running.deploy("bad", "def handler(event, context):\n    return (1,\n")
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "syntax_error"
    assert error["message"].startswith("handler.py, line 2:")
    assert error["line"] == 2


async def test_import_failure_and_missing_handler_are_reported_at_deploy(
    running: Running,
) -> None:
    response = await running.deploy("bad", "import no_such_module_xyz\n")
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "import_error"
    assert "ModuleNotFoundError" in error["message"]
    assert "no_such_module_xyz" in error["message"]

    response = await running.deploy("bad", "def run(event, context):\n    return 1\n")
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert 'defines no function "handler"' in message
    assert "--handler" in message

    response = await running.deploy("bad", "raise SystemExit(4)\n")
    assert response.status == 422
    _, data = await running.admin("GET", "/v1/functions")
    assert data == {"functions": []}
    assert running.platform.scheduler.instances_of("bad") == []


async def test_memory_limit_turns_a_runaway_allocation_into_an_error(running: Running) -> None:
    await running.deploy_ok(
        "hog",
        textwrap.dedent("""
        def handler(event, context):
            blob = bytearray(event["mb"] * 1024 * 1024)
            return len(blob)
    """),
        memory="64Mi",
    )
    assert await (await running.call("hog", {"mb": 8})).json() == 8 << 20
    response = await running.call("hog", {"mb": 512})
    assert response.status == 500
    assert (await response.json())["error"]["type"] == "MemoryError"
    assert (await running.call("hog", {"mb": 8})).status == 200


async def test_full_queue_answers_429_with_retry_after(make_platform: PlatformFactory) -> None:
    async with make_platform(pool={"max_instances": 1, "max_queue": 1}) as running:
        await running.deploy_ok("slow", PID)
        responses = await asyncio.gather(*(running.call("slow", {"sleep": 0.5}) for _ in range(3)))
        statuses = sorted(r.status for r in responses)
        assert statuses == [200, 200, 429]
        [throttled] = [r for r in responses if r.status == 429]
        assert int(throttled.headers["Retry-After"]) >= 1
        assert (await throttled.json())["error"]["code"] == "queue_full"
