"""A broker restarted during a stream of 1,000 messages: the source reconnects (with back-off)
and every message is handled at least once. Each broker here is a private instance the test
starts on a free port (redis-server, nats-server, mosquitto, a RabbitMQ node of its own), so
restarting it disturbs no one."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.settings import EventSettings
from tests.conftest import PlatformFactory, shared
from tests.integration.brokers import PrivateBroker
from tests.integration.test_brokers_crash import COUNTER, MESSAGES, handled, wait_handled

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["mqtt", "nats", "rabbitmq", "redis"])
def private(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateBroker]:
    kind = request.param
    if not PrivateBroker.available(kind):
        pytest.skip(f"{PrivateBroker.COMMANDS[kind]} is not installed: no private {kind}")
    if kind == "rabbitmq" and os.geteuid() != 0:
        pytest.skip("a private RabbitMQ node is started as root (the package's files)")
    broker = PrivateBroker(kind, tmp_path / f"{kind}-data")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_a_broker_restart_during_a_stream_loses_nothing(
    private: PrivateBroker, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    one = private.broker
    name = one.unique()
    await one.create(name)
    out = shared(tmp_path) / "handled"
    payloads = [json.dumps({"n": n}).encode() for n in range(MESSAGES)]
    # A small backlog keeps most of the stream on the broker when it stops.
    fast = EventSettings(source_reconnect_max_s=0.5, source_max_backlog=50, source_batch=25)
    async with make_platform(events=fast) as running:
        await running.deploy_ok("count", COUNTER, env={"OUT": str(out)}, concurrency=4)
        status, trigger = await running.admin(
            "POST", "/v1/functions/count/triggers", json=one.trigger(name)
        )
        assert status == 201, trigger
        await one.publish(name, payloads[:500])
        await wait_handled(out, 100, 60, "handled before the restart")
        stopped_at = len(handled(out))
        await asyncio.to_thread(private.restart)
        await one.publish(name, payloads[500:])
        found = await wait_handled(out, MESSAGES, 60, "handled")
        assert set(found) == set(range(MESSAGES))
        manager = running.platform.events.sources
        assert manager is not None
        (stats,) = manager.stats()
        assert stats.reconnects >= 1
        print(
            f"{one.kind}: stopped after {stopped_at} handled; {len(found) - MESSAGES} "
            f"handled twice, {stats.reconnects} reconnect(s)"
        )
        assert stopped_at < 400, "the broker stopped after most of the stream was handled"
