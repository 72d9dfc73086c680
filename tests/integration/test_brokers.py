"""Broker sources against the real brokers on loopback (NATS JetStream, RabbitMQ, Redis Streams,
Mosquitto): messages become deliveries with their metadata in the handler's context; a URL
with credentials is stored sealed and comes back masked; a bad URL, a broker that does not
answer or a stream that does not exist is refused at `trigger add`; back-pressure stops the
pulling, not the messages; exactly one gateway consumes a source. (The SIGKILL and
broker-restart runs of 1,000 messages: test_brokers_crash.py.)"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events.settings import EventSettings
from events.sources import kinds
from events.sources.secrets import open_url
from tests.conftest import PlatformFactory, Running, shared
from tests.integration.brokers import BROKERS, Broker

pytestmark = pytest.mark.timeout(90)

RECORDER = textwrap.dedent("""
    import json

    def handler(event, context):
        with open(context.config["OUT"], "a") as f:
            f.write(json.dumps({"event": event, "source": context.source, "topic": context.topic,
                                "message": dict(context.message),
                                "headers": dict(context.headers)}) + "\\n")
""")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def wait_for_lines(path: Path, n: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while len(found := lines(path)) < n:
        assert time.monotonic() < deadline, f"{len(found)} of {n} handled"
        await asyncio.sleep(0.05)
    return found


@pytest.fixture(params=sorted(BROKERS))
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Broker, str]]:
    """A broker that answers, and a stream / queue / key of a unique name on it."""
    one = BROKERS[request.param]
    one.require()
    name = one.unique()
    await one.create(name)
    yield one, name
    await one.remove(name)


async def add_trigger(running: Running, function: str, body: dict[str, Any]) -> tuple[int, Any]:
    return await running.admin("POST", f"/v1/functions/{function}/triggers", json=body)


async def test_messages_reach_the_handler_with_their_metadata(
    running: Running, broker: tuple[Broker, str], tmp_path: Path
) -> None:
    one, name = broker
    out = shared(tmp_path) / "out.jsonl"
    await running.deploy_ok("rec", RECORDER, env={"OUT": str(out)})
    status, trigger = await add_trigger(running, "rec", one.trigger(name))
    assert status == 201, trigger
    assert trigger["kind"] == one.kind
    await asyncio.sleep(0)  # (the source starts on this gateway at once: the broker keeps
    # what is published meanwhile anyway, since the trigger prepared it)
    payloads = [json.dumps({"n": i}).encode() for i in range(40)]
    await one.publish(name, payloads)
    found = await wait_for_lines(out, 40)
    assert sorted(x["event"]["n"] for x in found) == list(range(40))
    first = found[0]
    assert first["source"] == one.kind
    assert first["message"]["broker"] == one.kind
    assert first["message"]["trigger"] == trigger["id"]
    assert first["headers"]["X-Ember-Source"] == one.kind
    expected = {
        "nats": ("subject", f"{name}.events"),
        "rabbitmq": ("routing_key", name),
        "redis": ("stream", name),
        "mqtt": ("topic", name),
        "kafka": ("topic", name),
    }[one.kind]
    assert first["message"][expected[0]] == expected[1]
    assert first["topic"] == expected[1]
    if one.kind == "nats":
        assert sorted(x["message"]["stream_seq"] for x in found) == list(range(1, 41))
    if one.kind == "redis":
        assert first["headers"]["origin"] == "test"  # the entry's other fields
    # The trigger is listed, with what it consumes.
    status, listed = await running.admin("GET", "/v1/triggers?function=rec")
    assert status == 200
    assert [t["id"] for t in listed["triggers"]] == [trigger["id"]]
    # And /metrics shows the source.
    async with running.http.get(f"{running.url}/metrics") as response:
        text = await response.text()
    assert f'ember_source_messages_total{{function="rec",kind="{one.kind}",trigger="' in text
    # Deleting the trigger stops its source (the platform is told at once).
    status, _ = await running.admin("DELETE", f"/v1/triggers/{trigger['id']}")
    assert status == 200
    manager = running.platform.events.sources
    assert manager is not None
    deadline = time.monotonic() + 10
    while manager.stats():
        assert time.monotonic() < deadline, "the source still runs"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", sorted(BROKERS))
async def test_a_missing_stream_or_a_bad_url_is_refused_at_trigger_add(
    running: Running, kind: str
) -> None:
    one = BROKERS[kind]
    one.require()
    await running.deploy_ok("f", RECORDER, env={"OUT": "/dev/null"})
    # A port where nothing listens: refused, saying which broker and what to check.
    dead = {
        "nats": "nats://127.0.0.1:1",
        "rabbitmq": "amqp://guest:hunter2@127.0.0.1:1/",
        "redis": "redis://:hunter2@127.0.0.1:1/0",
        "mqtt": "mqtt://127.0.0.1:1",
        "kafka": "kafka://127.0.0.1:1",
    }[kind]
    status, body = await add_trigger(running, "f", one.trigger("x", url=dead))
    assert status == 400, body
    assert body["error"]["code"] == "broker_unavailable"
    assert "127.0.0.1:1" in body["error"]["message"]
    assert "hunter2" not in body["error"]["message"]  # the password is never shown back
    # Not a URL of this broker at all.
    status, body = await add_trigger(running, "f", one.trigger("x", url="http://127.0.0.1/"))
    assert status == 400, body
    assert body["error"]["code"] == "bad_source"
    assert body["error"]["setting"] == "url"
    # A stream / queue that does not exist (MQTT topics need not exist: nothing to refuse).
    if kind != "mqtt":
        status, body = await add_trigger(running, "f", one.trigger(one.unique()))
        assert status == 400, body
        assert body["error"]["code"] == "source_not_found"
        assert "ember-test-" in body["error"]["message"]
    # Nothing was stored.
    status, listed = await running.admin("GET", "/v1/triggers?function=f")
    assert listed["triggers"] == []
    # And an unknown function is a 404 before the broker is asked anything.
    status, body = await add_trigger(running, "nope", one.trigger("x", url=dead))
    assert status == 404, body


async def test_credentials_in_the_url_are_stored_sealed_and_never_shown(running: Running) -> None:
    one = BROKERS["rabbitmq"]
    one.require()
    name = one.unique()
    await one.create(name)
    try:
        await running.deploy_ok("f", RECORDER, env={"OUT": "/dev/null"})
        url = "amqp://guest:guest@127.0.0.1:5672/?heartbeat=30"
        status, trigger = await add_trigger(running, "f", {"rabbitmq": name, "url": url})
        assert status == 201, trigger
        assert trigger["url"] == "amqp://guest:***@127.0.0.1:5672/?heartbeat=30"
        status, listed = await running.admin("GET", "/v1/triggers")
        assert ":guest@" not in json.dumps(listed)
        # Stored sealed with the platform's secrets key (as `fn secret set` values are); the
        # real URL is what the source connects with.
        [stored] = await running.platform.store.list_source_triggers()
        assert stored.source_url is not None
        assert "guest" not in stored.source_url
        assert open_url(stored.source_url, running.platform.vault) == url
        assert kinds.url_of(stored, running.platform.vault) == url
    finally:
        await one.remove(name)


async def test_a_full_backlog_stops_the_pulling_and_loses_nothing(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    """With room for 20 deliveries of the source, a slow handler: the source pauses (the
    broker keeps the rest, its lag shows them) and every message still arrives."""
    one = BROKERS["redis"]
    one.require()
    name = one.unique()
    await one.create(name)
    out = shared(tmp_path) / "out.jsonl"
    slow = RECORDER.replace("import json", "import json, time").replace(
        "    with open", "    time.sleep(0.02)\n    with open"
    )
    try:
        async with make_platform(
            events=EventSettings(source_max_backlog=20, source_batch=10)
        ) as running:
            await running.deploy_ok("slow", slow, env={"OUT": str(out)})
            status, trigger = await add_trigger(running, "slow", one.trigger(name))
            assert status == 201, trigger
            await one.publish(name, [json.dumps({"n": i}).encode() for i in range(150)])
            manager = running.platform.events.sources
            assert manager is not None
            paused_seen = False
            deadline = time.monotonic() + 60
            while len(lines(out)) < 150:
                assert time.monotonic() < deadline, f"{len(lines(out))} of 150 handled"
                waiting = await running.platform.store.source_backlog(
                    (await running.platform.store.list_source_triggers())[0], 1000
                )
                assert waiting <= 20 + 10, waiting  # never more than the bound (and a batch)
                paused_seen |= any(s.paused for s in manager.stats())
                await asyncio.sleep(0.02)
            assert paused_seen
            assert sorted(x["event"]["n"] for x in lines(out)) == list(range(150))
    finally:
        await one.remove(name)


async def test_one_gateway_consumes_a_source_and_another_takes_over(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    one = BROKERS["nats"]
    one.require()
    name = one.unique()
    await one.create(name)
    out = shared(tmp_path) / "out.jsonl"
    fast = EventSettings(source_lock_retry_s=0.2)
    try:
        async with make_platform(events=fast) as first:
            await first.deploy_ok("rec", RECORDER, env={"OUT": str(out)})
            status, _ = await add_trigger(first, "rec", one.trigger(name))
            assert status == 201
            async with make_platform(events=fast) as second:
                managers = [first.platform.events.sources, second.platform.events.sources]
                await asyncio.sleep(0.6)  # several lock tries by the second gateway
                counts = [len(m.stats()) if m else -1 for m in managers]
                assert counts == [1, 0], counts
                await one.publish(name, [json.dumps({"n": i}).encode() for i in range(20)])
                await wait_for_lines(out, 20)
            # (the second stopped) the first still consumes; now it stops and...
        async with make_platform(events=fast) as third:
            await one.publish(name, [json.dumps({"n": i}).encode() for i in range(20, 40)])
            found = await wait_for_lines(out, 40)
            assert sorted(x["event"]["n"] for x in found) == list(range(40))
            manager = third.platform.events.sources
            assert manager is not None
            assert len(manager.stats()) == 1
    finally:
        await one.remove(name)


async def test_a_nats_stream_made_again_is_new_messages_not_repeats(
    running: Running, tmp_path: Path
) -> None:
    """Sequences start at 1 again in a stream deleted and made again: its messages are not
    taken for the ones already committed."""
    one = BROKERS["nats"]
    one.require()
    name = one.unique()
    await one.create(name)
    out = shared(tmp_path) / "out.jsonl"
    try:
        await running.deploy_ok("rec", RECORDER, env={"OUT": str(out)})
        status, trigger = await add_trigger(running, "rec", one.trigger(name))
        assert status == 201, trigger
        await one.publish(name, [json.dumps({"n": i}).encode() for i in range(5)])
        await wait_for_lines(out, 5)
        manager = running.platform.events.sources
        assert manager is not None
        (stats,) = manager.stats()
        await one.remove(name)
        await one.create(name)
        deadline = time.monotonic() + 20
        while not (stats.reconnects and stats.connected):
            assert time.monotonic() < deadline, "the source did not come back"
            await asyncio.sleep(0.02)
        await one.publish(name, [json.dumps({"n": i}).encode() for i in range(5, 10)])
        found = await wait_for_lines(out, 10)
        assert sorted(x["event"]["n"] for x in found) == list(range(10))
        assert sorted(x["message"]["stream_seq"] for x in found[5:]) == [1, 2, 3, 4, 5]
    finally:
        await one.remove(name)
