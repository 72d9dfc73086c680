"""Deploy and call functions through the gateway: real Postgres, real invoker processes."""

from __future__ import annotations

import asyncio
import textwrap

from tests.conftest import PlatformFactory, Running

HELLO = textwrap.dedent("""
    calls = 0

    def handler(event, context):
        global calls
        calls += 1
        print("hello from", context.function)
        return {"hello": event.get("name", "world"), "calls": calls, "version": context.version}
""")


async def test_deploy_then_call_reuses_the_warm_instance(running: Running) -> None:
    deployed = await running.deploy_ok("hello", HELLO)
    assert deployed["version"] == 1

    results = []
    for _ in range(3):
        response = await running.call("hello", {"name": "ann"})
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        results.append(await response.json())

    # Module state survives between calls: one instance served all three.
    assert [r["calls"] for r in results] == [1, 2, 3]
    assert results[0] == {"hello": "ann", "calls": 1, "version": 1}
    status, data = await running.admin("GET", "/v1/functions/hello/activations")
    assert status == 200
    activations = data["activations"]
    assert len(activations) == 3
    assert all(a["status"] == "success" and a["http_status"] == 200 for a in activations)
    assert all(a["logs"] == "hello from hello\n" for a in activations)


async def test_first_call_after_deploy_is_warm_and_later_versions_pin(running: Running) -> None:
    await running.deploy_ok("hello", HELLO)
    await running.deploy_ok("hello", HELLO.replace('"hello":', '"hi":'))

    latest = await (await running.call("hello", {})).json()
    pinned = await (await running.call("hello:1", {})).json()
    assert latest == {"hi": "world", "calls": 1, "version": 2}
    assert pinned == {"hello": "world", "calls": 1, "version": 1}

    _, data = await running.admin("GET", "/v1/functions/hello/activations")
    # Each deploy's import check left an instance warm, and version 1's is still kept alive.
    assert [a["cold"] for a in data["activations"]] == [False, False]


async def test_rollback_serves_the_previous_version(running: Running) -> None:
    await running.deploy_ok("hello", HELLO)
    await running.deploy_ok("hello", HELLO)
    status, data = await running.admin("POST", "/v1/functions/hello/rollback", json={})
    assert (status, data["active_version"]) == (200, 1)
    assert (await (await running.call("hello", {})).json())["version"] == 1

    status, data = await running.admin("POST", "/v1/functions/hello/rollback", json={"to": 2})
    assert (status, data["active_version"]) == (200, 2)
    assert (await (await running.call("hello", {})).json())["version"] == 2

    status, data = await running.admin("POST", "/v1/functions/hello/rollback", json={"to": 9})
    assert status == 404
    assert "fn versions hello" in data["error"]["message"]

    status, data = await running.admin("GET", "/v1/functions/hello/versions")
    assert [(v["version"], v["active"]) for v in data["versions"]] == [(2, True), (1, False)]


async def test_unknown_function_names_the_deploy_command(running: Running) -> None:
    response = await running.call("resize", {})
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "function_not_found"
    assert "fn deploy resize.py" in error["message"]

    await running.deploy_ok("hello", HELLO)
    response = await running.call("hello:7", {})
    assert response.status == 404
    assert "no version 7" in (await response.json())["error"]["message"]


async def test_handler_exception_is_a_500_with_type_message_and_activation(
    running: Running,
) -> None:
    await running.deploy_ok(
        "boom",
        textwrap.dedent("""
        def handler(event, context):
            print("about to fail")
            return 1 / 0
    """),
    )
    response = await running.call("boom", {})
    assert response.status == 500
    error = (await response.json())["error"]
    assert error["code"] == "handler_error"
    assert error["type"] == "ZeroDivisionError"
    assert error["message"] == "division by zero"
    assert "Traceback" not in str(error)
    activation_id = error["activation_id"]
    assert response.headers["X-Ember-Activation-Id"] == activation_id

    status, activation = await running.admin("GET", f"/v1/activations/{activation_id}")
    assert status == 200
    assert activation["status"] == "error"
    assert "about to fail" in activation["logs"]
    assert "Traceback" in activation["logs"]
    assert 'handler.py", line 4, in handler' in activation["logs"]

    # The instance survives a handler exception.
    assert (await running.call("boom", {})).status == 500
    assert len(running.platform.scheduler.instances_of("boom")) == 1


async def test_async_handler_and_captured_logging(running: Running) -> None:
    await running.deploy_ok(
        "aio",
        textwrap.dedent("""
        import asyncio, logging, sys

        async def handler(event, context):
            await asyncio.sleep(0)
            context.logger.info("via context")
            logging.getLogger("lib").warning("via logging")
            print("to stderr", file=sys.stderr)
            return context.response(b"raw", status=201, headers={"X-Custom": "yes"})
    """),
    )
    response = await running.call("aio", {})
    assert response.status == 201
    assert response.headers["X-Custom"] == "yes"
    assert await response.read() == b"raw"
    activation_id = response.headers["X-Ember-Activation-Id"]
    _, activation = await running.admin("GET", f"/v1/activations/{activation_id}")
    assert activation["logs"] == (
        "INFO function: via context\nWARNING lib: via logging\nto stderr\n"
    )


async def test_event_is_json_or_raw_bytes_and_context_has_the_request(running: Running) -> None:
    await running.deploy_ok(
        "echo",
        textwrap.dedent("""
        def handler(event, context):
            return {"type": type(event).__name__, "method": context.method,
                    "path": context.path, "query": context.query,
                    "header": context.headers.get("X-Trace"),
                    "remaining_ok": 0 < context.remaining_s() <= 30}
    """),
    )
    response = await running.call("echo/a/b?x=1", data=b"\x00\x01", headers={"X-Trace": "t1"})
    assert await response.json() == {
        "type": "bytes",
        "method": "POST",
        "path": "/a/b",
        "query": "x=1",
        "header": "t1",
        "remaining_ok": True,
    }
    response = await running.call("echo", {"a": 1})
    assert (await response.json())["type"] == "dict"
    response = await running.call(
        "echo", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert "not valid JSON" in (await response.json())["error"]["message"]


async def test_function_sees_its_env_but_no_platform_credentials(running: Running) -> None:
    await running.deploy_ok(
        "env",
        textwrap.dedent("""
        import os

        def handler(event, context):
            return {"greeting": os.environ.get("GREETING"), "config": context.config,
                    "leaked": sorted(k for k in os.environ
                                     if k in ("DATABASE_URL", "FN_TOKEN", "PGPASSWORD")
                                     or "TOKEN" in k)}
    """),
        env={"GREETING": "hej"},
    )
    data = await (await running.call("env", {})).json()
    assert data == {"greeting": "hej", "config": {"GREETING": "hej"}, "leaked": []}


async def test_concurrent_calls_each_get_their_own_logs(running: Running) -> None:
    await running.deploy_ok(
        "conc",
        textwrap.dedent("""
        import asyncio

        async def handler(event, context):
            print("start", event["n"])
            await asyncio.sleep(0.05)
            print("end", event["n"])
            return event["n"]
    """),
        concurrency=8,
    )
    responses = await asyncio.gather(*(running.call("conc", {"n": n}) for n in range(8)))
    bodies = [await r.json() for r in responses]
    assert all(isinstance(b, int) for b in bodies), bodies
    assert sorted(bodies) == list(range(8)), bodies
    assert len(running.platform.scheduler.instances_of("conc")) == 1
    for response in responses:
        n = await response.json()
        _, activation = await running.admin(
            "GET", f"/v1/activations/{response.headers['X-Ember-Activation-Id']}"
        )
        assert activation["logs"] == f"start {n}\nend {n}\n"


async def test_delete_removes_function_and_stops_its_instances(running: Running) -> None:
    await running.deploy_ok("hello", HELLO)
    assert (await running.call("hello", {})).status == 200
    status, _ = await running.admin("DELETE", "/v1/functions/hello")
    assert status == 200
    assert running.platform.scheduler.instances_of("hello") == []
    assert (await running.call("hello", {})).status == 404
    status, _ = await running.admin("DELETE", "/v1/functions/hello")
    assert status == 404


async def test_list_and_show(running: Running) -> None:
    await running.deploy_ok("b-fn", HELLO, timeout="2m", memory="128Mi", concurrency=2)
    await running.deploy_ok("a-fn", HELLO)
    status, data = await running.admin("GET", "/v1/functions")
    assert status == 200
    assert [f["name"] for f in data["functions"]] == ["a-fn", "b-fn"]
    status, data = await running.admin("GET", "/v1/functions/b-fn")
    assert data["active"]["timeout_s"] == 120
    assert data["active"]["memory_bytes"] == 128 << 20
    assert data["active"]["concurrency"] == 2
    assert data["instances"]["total"] == 1


async def test_metrics_count_calls_and_cold_starts(running: Running) -> None:
    await running.deploy_ok("hello", HELLO)
    await running.call("hello", {})
    await running.call("nope", {})
    async with running.http.get(f"{running.url}/metrics") as response:
        text = await response.text()
    assert 'ember_invocations_total{function="hello",status="success"} 1.0' in text
    assert "ember_invocation_duration_seconds_bucket" in text
    assert 'ember_instances{state="ready"} 1.0' in text
    async with running.http.get(f"{running.url}/healthz") as response:
        assert response.status == 200


async def test_scale_to_zero_after_keep_alive_then_cold_start(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool={"keep_alive_s": 0.3}) as running:
        await running.deploy_ok("hello", HELLO)
        assert (await (await running.call("hello", {})).json())["calls"] == 1
        scheduler = running.platform.scheduler
        await scheduler.wait_until(lambda: not scheduler.instances_of("hello"), timeout_s=10)

        response = await running.call("hello", {})
        assert (await response.json())["calls"] == 1  # a new instance: module state is fresh
        _, activation = await running.admin(
            "GET", f"/v1/activations/{response.headers['X-Ember-Activation-Id']}"
        )
        assert activation["cold"] is True
