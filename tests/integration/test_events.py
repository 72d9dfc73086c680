"""Async invocations, topics, schedules and table triggers against real Postgres and invokers."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from store.embedded import with_database
from tests.conftest import PlatformFactory, Running, shared

# Each runs on the usual Postgres and on the external one when set (tests/conftest.py).
pytestmark = pytest.mark.both_postgres

# Appends each event's "n" (or the whole event) to the file named by env OUT, one per line.
RECORDER = textwrap.dedent("""
    import json, os

    def handler(event, context):
        with open(context.config["OUT"], "a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\\n")
        return {"got": event, "delivery": context.headers.get("X-Ember-Delivery-Id"),
                "attempt": context.headers.get("X-Ember-Attempt")}
""")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_for_status(
    running: Running, activation_id: str, *statuses: str, timeout_s: float = 20.0
) -> dict[str, Any]:
    """Poll `GET /v1/activations/ID` (what `fn activation ID --wait` does) until it is in one
    of `statuses`."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, data = await running.admin("GET", f"/v1/activations/{activation_id}")
        assert status == 200, data
        if data["status"] in statuses:
            return dict(data)
        assert time.monotonic() < deadline, f"still {data['status']}: {data}"
        await asyncio.sleep(0.02)


async def wait_for_lines(path: Path, n: int, timeout_s: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while len(found := lines(path)) < n:
        assert time.monotonic() < deadline, f"{len(found)} of {n} lines: {found}"
        await asyncio.sleep(0.02)
    return found


async def submit(running: Running, target: str, payload: Any, **headers: str) -> Any:
    async with running.http.post(
        f"{running.url}/fn/{target}", json=payload, headers={"Prefer": "respond-async", **headers}
    ) as response:
        data = await response.json()
        assert response.status == 202, data
        assert response.headers["Location"] == f"/v1/activations/{data['activation_id']}"
        return data


async def test_async_invocation_is_accepted_then_runs(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "out"
    await running.deploy_ok("rec", RECORDER, env={"OUT": str(out)})
    accepted = await submit(running, "rec", {"n": 1})
    assert accepted["status"] == "accepted"
    done = await wait_for_status(running, accepted["activation_id"], "succeeded")
    assert done["result"] == {
        "got": {"n": 1},
        "delivery": accepted["activation_id"],
        "attempt": "1",
    }
    assert done["attempts"] == 1
    assert done["source"] == "async"
    assert lines(out) == ['{"n": 1}']
    # The attempt is also an ordinary activation of the function.
    _, listed = await running.admin("GET", "/v1/functions/rec/activations")
    assert [a["id"] for a in listed["activations"]] == [done["last_activation"]]
    async with running.http.get(f"{running.url}/metrics") as response:
        metrics = await response.text()
    assert 'ember_delivery_attempts_total{function="rec",outcome="succeeded"} 1.0' in metrics
    assert 'ember_delivery_wait_seconds_count{source="async"} 1.0' in metrics
    assert 'ember_delivery_latency_seconds_count{source="async"} 1.0' in metrics


async def test_an_idempotency_key_runs_the_call_once(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "out"
    await running.deploy_ok("rec", RECORDER, env={"OUT": str(out)})
    first = await submit(running, "rec", {"n": 1}, **{"Idempotency-Key": "order-7"})
    again = await submit(running, "rec", {"n": 1}, **{"Idempotency-Key": "order-7"})
    other = await submit(running, "rec", {"n": 2}, **{"Idempotency-Key": "order-8"})
    assert again["activation_id"] == first["activation_id"]
    assert (first["status"], again["status"]) == ("accepted", "duplicate")
    await wait_for_status(running, first["activation_id"], "succeeded")
    await wait_for_status(running, other["activation_id"], "succeeded")
    assert sorted(lines(out)) == ['{"n": 1}', '{"n": 2}']


async def test_async_call_of_an_unknown_function_is_refused(running: Running) -> None:
    async with running.http.post(
        f"{running.url}/fn/nope", json={}, headers={"Prefer": "respond-async"}
    ) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "function_not_found"


FLAKY = textwrap.dedent("""
    import os

    def handler(event, context):
        if os.path.exists(context.config["FIXED"]):
            return "fine now"
        raise RuntimeError("downstream is down")
""")


async def test_failures_retry_then_dead_letter_and_redrive(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    from events.settings import EventSettings

    fixed = shared(tmp_path) / "fixed"
    async with make_platform(events=EventSettings(retry_base_s=0.05, poll_s=0.2)) as running:
        await running.deploy_ok("flaky", FLAKY, env={"FIXED": str(fixed)}, max_attempts=3)
        accepted = await submit(running, "flaky", {})
        dead = await wait_for_status(running, accepted["activation_id"], "dead")
        assert dead["attempts"] == 3
        assert dead["error"]["type"] == "RuntimeError"
        assert dead["error"]["message"] == "downstream is down"
        assert "failed 3 attempts" in dead["error"]["dead_because"]
        assert "RuntimeError: downstream is down" in dead["logs"]  # the last attempt's logs
        _, activations = await running.admin("GET", "/v1/functions/flaky/activations")
        assert [a["status"] for a in activations["activations"]] == ["error"] * 3
        async with running.http.get(f"{running.url}/metrics") as response:
            metrics = await response.text()
        assert 'ember_dead_letters_total{function="flaky"} 1.0' in metrics
        assert 'ember_delivery_attempts_total{function="flaky",outcome="retry"} 2.0' in metrics

        status, dlq = await running.admin("GET", "/v1/dlq?function=flaky")
        assert status == 200
        assert [d["id"] for d in dlq["dead"]] == [accepted["activation_id"]]

        fixed.touch()
        status, redriven = await running.admin(
            "POST", "/v1/dlq/redrive", json={"ids": [accepted["activation_id"]]}
        )
        assert redriven == {"redriven": [accepted["activation_id"]]}
        done = await wait_for_status(running, accepted["activation_id"], "succeeded")
        assert (done["result"], done["attempts"], done["redrives"]) == ("fine now", 1, 1)
        _, dlq = await running.admin("GET", "/v1/dlq?function=flaky")
        assert dlq["dead"] == []


SAYS_HOW = textwrap.dedent("""
    def handler(event, context):
        if event["how"] == "permanent":
            raise context.PermanentError("order 7 is malformed")
        if event["how"] == "later":
            raise context.RetryAfter(30, "rate limited")
        if event["how"] == "404":
            return context.response(b"no such order", status=404)
        return context.response(b"busy", status=503, headers={"Retry-After": "20"})
""")


async def test_handlers_say_do_not_retry_or_retry_later(running: Running) -> None:
    await running.deploy_ok("says", SAYS_HOW)
    permanent = await submit(running, "says", {"how": "permanent"})
    later = await submit(running, "says", {"how": "later"})
    status_404 = await submit(running, "says", {"how": "404"})
    busy = await submit(running, "says", {"how": "busy"})

    dead = await wait_for_status(running, permanent["activation_id"], "dead")
    assert (dead["attempts"], dead["error"]["type"]) == (1, "PermanentError")
    assert dead["error"]["dead_because"] == "permanent error"
    dead = await wait_for_status(running, status_404["activation_id"], "dead")
    assert (dead["attempts"], dead["http_status"], dead["error"]["type"]) == (1, 404, "HTTP404")

    for accepted, delay in ((later, 30), (busy, 20)):
        data = await wait_for_status(running, accepted["activation_id"], "pending")
        while data["attempts"] == 0:
            data = await wait_for_status(running, accepted["activation_id"], "pending")
        import datetime as dt

        wait = (
            dt.datetime.fromisoformat(data["next_attempt_at"])
            - dt.datetime.fromisoformat(data["started_at"])
        ).total_seconds()
        assert delay - 1 < wait < delay + 1, data


async def test_topics_fan_out_to_each_subscriber(running: Running, tmp_path: Path) -> None:
    a, b = shared(tmp_path) / "a", shared(tmp_path) / "b"
    await running.deploy_ok("suba", RECORDER, env={"OUT": str(a)})
    await running.deploy_ok("subb", RECORDER, env={"OUT": str(b)})

    status, data = await running.admin("POST", "/v1/events/orders.created", json={"n": 0})
    assert (status, data["error"]["code"]) == (404, "topic_not_found")
    assert "fn topic create orders.created" in data["error"]["message"]
    status, data = await running.admin(
        "POST", "/v1/functions/suba/triggers", json={"topic": "orders.created"}
    )
    assert (status, data["error"]["code"]) == (404, "topic_not_found")

    status, _ = await running.admin("PUT", "/v1/topics/orders.created")
    assert status == 201
    for name in ("suba", "subb"):
        status, trigger = await running.admin(
            "POST", f"/v1/functions/{name}/triggers", json={"topic": "orders.created"}
        )
        assert status == 201, trigger
    status, data = await running.admin(
        "POST", "/v1/functions/suba/triggers", json={"topic": "orders.created"}
    )
    assert (status, data["error"]["code"]) == (409, "trigger_exists")

    for n in range(5):
        status, published = await running.admin("POST", "/v1/events/orders.created", json={"n": n})
        assert (status, published["deliveries"]) == (202, 2)
    status, repeat = await running.admin(
        "POST", "/v1/events/orders.created", json={"n": 9}, headers={"Idempotency-Key": "k1"}
    )
    status, again = await running.admin(
        "POST", "/v1/events/orders.created", json={"n": 9}, headers={"Idempotency-Key": "k1"}
    )
    assert repeat["event_id"] == again["event_id"]
    assert again["status"] == "duplicate"
    expected = sorted(f'{{"n": {n}}}' for n in (0, 1, 2, 3, 4, 9))
    assert sorted(await wait_for_lines(a, 6)) == expected
    assert sorted(await wait_for_lines(b, 6)) == expected

    status, data = await running.admin("DELETE", "/v1/topics/orders.created")
    assert (status, data["error"]["code"]) == (409, "topic_in_use")
    status, listed = await running.admin("GET", "/v1/topics")
    assert listed["topics"][0]["subscribers"] == 2


async def test_bad_triggers_are_refused_with_a_reason(running: Running) -> None:
    await running.deploy_ok("rec", RECORDER, env={"OUT": "/dev/null"})
    cases = [
        ({"cron": "61 * * * *"}, "bad_schedule"),
        ({"cron": "every day"}, "bad_schedule"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "bad_schedule"),
        ({"table": "public.no_such_table"}, "bad_table"),
        ({"table": "x; drop table y"}, "bad_table"),
        ({"table": "t", "on": "insert,truncate"}, "bad_operations"),
        ({"topic": "a", "cron": "* * * * *"}, "bad_trigger"),
        ({"topic": "no spaces"}, "bad_topic"),
    ]
    for body, code in cases:
        status, data = await running.admin("POST", "/v1/functions/rec/triggers", json=body)
        assert (status, data["error"]["code"]) == (400, code), (body, data)
    status, data = await running.admin(
        "POST", "/v1/functions/nope/triggers", json={"cron": "* * * * *"}
    )
    assert status == 404
    _, listed = await running.admin("GET", "/v1/triggers")
    assert listed["triggers"] == []


async def test_a_schedule_fires_each_tick_once_across_gateways(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    out = shared(tmp_path) / "out"
    async with make_platform() as one, make_platform() as two:
        await one.deploy_ok("tick", RECORDER, env={"OUT": str(out)})
        status, trigger = await one.admin(
            "POST", "/v1/functions/tick/triggers", json={"cron": "* * * * * *"}
        )  # every second
        assert status == 201, trigger
        two.platform.triggers_changed()
        found = await wait_for_lines(out, 3)
        status, _ = await one.admin("DELETE", f"/v1/triggers/{trigger['id']}")
        assert status == 200
    ticks = [line for line in lines(out)]
    scheduled = [__import__("json").loads(t)["scheduled_at"] for t in ticks]
    assert len(scheduled) == len(set(scheduled)), "a tick fired twice"
    assert len(found) >= 3


def test_missed_ticks_are_coalesced_into_one() -> None:
    import datetime as dt

    from events.triggers import plan
    from store import Trigger

    utc = dt.UTC
    trigger = Trigger(
        id=1,
        function="f",
        kind="cron",
        cron="*/5 * * * *",
        timezone="UTC",
        next_fire_at=dt.datetime(2026, 1, 1, 10, 0, tzinfo=utc),
    )
    tick, missed, following = plan(trigger, now=dt.datetime(2026, 1, 1, 10, 17, tzinfo=utc))
    assert tick == dt.datetime(2026, 1, 1, 10, 15, tzinfo=utc)
    assert missed == 3  # 10:00, 10:05, 10:10 stand behind the 10:15 firing
    assert following == dt.datetime(2026, 1, 1, 10, 20, tzinfo=utc)
    on_time = plan(trigger, now=dt.datetime(2026, 1, 1, 10, 0, 0, 300, tzinfo=utc))
    assert on_time == (trigger.next_fire_at, 0, dt.datetime(2026, 1, 1, 10, 5, tzinfo=utc))
    paris = Trigger(
        id=2,
        function="f",
        kind="cron",
        cron="0 9 * * *",
        timezone="Europe/Paris",
        next_fire_at=dt.datetime(2026, 3, 28, 8, 0, tzinfo=utc),
    )
    # 9:00 in Paris is 8:00 UTC before the change to summer time and 7:00 UTC after it.
    assert plan(paris, now=dt.datetime(2026, 3, 28, 8, 0, tzinfo=utc))[2] == dt.datetime(
        2026, 3, 29, 7, 0, tzinfo=utc
    )


@pytest.fixture
async def app_database(database_url: str) -> Any:
    """A second database standing for the user's application database, with a table."""
    app_name = f"ember_app_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{app_name}"')
    finally:
        await admin.close()
    url = with_database(database_url, app_name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE SCHEMA app; CREATE TABLE app.orders (id int PRIMARY KEY, item text, qty int)"
        )
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{app_name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_table_changes_are_delivered_even_while_ember_is_down(
    make_platform: PlatformFactory, app_database: str, tmp_path: Path
) -> None:
    out = shared(tmp_path) / "out"
    app = await asyncpg.connect(app_database)
    try:
        async with make_platform() as running:
            await running.deploy_ok("orders", RECORDER, env={"OUT": str(out)})
            status, trigger = await running.admin(
                "POST",
                "/v1/functions/orders/triggers",
                json={"table": "app.orders", "on": "insert,update", "database": app_database},
            )
            assert status == 201, trigger
            assert trigger["table"] == "app.orders"
            assert urlsplit(trigger["database"]).password in (None, "***")
            # A caller's key that looks like the relay's own cannot shadow a change.
            spoof = await submit(
                running,
                "orders",
                {"op": "spoof"},
                **{"Idempotency-Key": f"change:{trigger['id']}:1"},
            )
            await wait_for_status(running, spoof["activation_id"], "succeeded")
            await app.execute("INSERT INTO app.orders VALUES (1, 'tea', 2)")
            await app.execute("UPDATE app.orders SET qty = 3 WHERE id = 1")
            await app.execute("DELETE FROM app.orders WHERE id = 1")  # not watched
            first = await wait_for_lines(out, 3)
        # Ember is down: the change waits in the application database's outbox.
        await app.execute("INSERT INTO app.orders VALUES (2, 'jam', 1)")
        async with make_platform() as running:
            found = await wait_for_lines(out, 4)
            # Renamed since: the trigger is still found, and removed, on the table's new name.
            await app.execute("ALTER TABLE app.orders RENAME TO purchases")
            status, _ = await running.admin("DELETE", f"/v1/triggers/{trigger['id']}")
            assert status == 200
        import json

        events = [e for e in map(json.loads, found) if e.get("op") != "spoof"]
        assert [(e["op"], e["table"], e["new"]) for e in events] == [
            ("insert", "app.orders", {"id": 1, "item": "tea", "qty": 2}),
            ("update", "app.orders", {"id": 1, "item": "tea", "qty": 3}),
            ("insert", "app.orders", {"id": 2, "item": "jam", "qty": 1}),
        ]
        assert events[1]["old"] == {"id": 1, "item": "tea", "qty": 2}
        assert len(first) == 3
        # Removing the trigger removed what it installed.
        assert await app.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ember%'") == 0
        assert (
            await app.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'ember_outbox'")
            == 0
        )
    finally:
        await app.close()


def test_a_watched_database_password_is_never_shown() -> None:
    from gateway.views import _redact

    assert _redact("postgresql://app:s3cret@db:5432/shop") == "postgresql://app:***@db:5432/shop"
    assert _redact("postgresql://app@db/shop") == "postgresql://app@db/shop"
    assert (
        _redact("postgresql://app@db/shop?password=s3cret&sslmode=require")
        == "postgresql://app@db/shop?password=***&sslmode=require"
    )


async def test_a_batch_publishes_all_or_nothing(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "out"
    await running.deploy_ok("rec", RECORDER, env={"OUT": str(out)})
    await running.admin("PUT", "/v1/topics/a")
    await running.admin("PUT", "/v1/topics/b")
    await running.admin("POST", "/v1/functions/rec/triggers", json={"topic": "a"})
    status, data = await running.admin(
        "POST",
        "/v1/events",
        json=[{"topic": "a", "data": {"n": 1}}, {"topic": "nope", "data": {"n": 2}}],
    )
    assert (status, data["error"]["code"]) == (404, "topic_not_found")
    assert '"nope"' in data["error"]["message"]
    status, data = await running.admin(
        "POST",
        "/v1/events",
        json=[
            {"topic": "a", "data": {"n": 1}},
            {"topic": "b", "data": {"n": 2}},
            {"topic": "a", "data": {"n": 3}},
        ],
    )
    assert status == 202, data
    assert [(e["topic"], e["deliveries"]) for e in data["events"]] == [("a", 1), ("b", 0), ("a", 1)]
    assert sorted(await wait_for_lines(out, 2)) == ['{"n": 1}', '{"n": 3}']
    status, data = await running.admin("POST", "/v1/events", json={"topic": "a"})
    assert (status, data["error"]["code"]) == (400, "bad_batch")


async def test_a_trigger_whose_database_is_gone_can_be_forgotten(
    running: Running, app_database: str, database_url: str
) -> None:
    await running.deploy_ok("orders", RECORDER, env={"OUT": "/dev/null"})
    status, trigger = await running.admin(
        "POST",
        "/v1/functions/orders/triggers",
        json={"table": "app.orders", "database": app_database},
    )
    assert status == 201, trigger
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE "{urlsplit(app_database).path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()
    status, data = await running.admin("DELETE", f"/v1/triggers/{trigger['id']}")
    assert (status, data["error"]["code"]) == (503, "watched_database_unavailable")
    assert "--force" in data["error"]["message"]
    status, _ = await running.admin("DELETE", f"/v1/triggers/{trigger['id']}?force=1")
    assert status == 200
    _, listed = await running.admin("GET", "/v1/triggers")
    assert listed["triggers"] == []


NASTY = textwrap.dedent("""
    def handler(event, context):
        return context.response(b"broken\\x00body", status=500,
                                headers={"Content-Type": "text/plain"})
""")


async def test_nul_bytes_in_a_reply_or_a_path_break_nothing(running: Running) -> None:
    await running.deploy_ok("nasty", NASTY, max_attempts=1)
    async with running.http.post(
        f"{running.url}/fn/nasty/a%00b",
        json={},
        headers={"Prefer": "respond-async", "Authorization": "Bearer caller-secret"},
    ) as response:
        assert response.status == 202
        accepted = await response.json()
    dead = await wait_for_status(running, accepted["activation_id"], "dead")
    assert dead["error"]["message"] == "broken\\0body"
    assert running.platform.failure() is None  # every background task is still running
    # And the worker goes on: a second one is delivered too.
    again = await submit(running, "nasty", {})
    await wait_for_status(running, again["activation_id"], "dead")
