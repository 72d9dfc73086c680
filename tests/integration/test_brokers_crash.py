"""A stream of 1,000 messages per broker, with `fn up` SIGKILLed in the middle and started again:
every message is handled at least once, none is lost, and the duplicates are counted (and
printed). The broker restarts: test_brokers_restart.py."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import shared
from tests.integration.brokers import BROKERS, Broker
from tests.integration.test_crash_recovery import FnUp, platforms

pytestmark = pytest.mark.timeout(180)
MESSAGES = 1000

# One line per handled message: its n (a repeat shows as a second line).
COUNTER = textwrap.dedent("""
    def handler(event, context):
        with open(context.config["OUT"], "a") as f:
            f.write(str(event["n"]) + "\\n")
""")


def handled(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split()]


async def wait_handled(path: Path, at_least: int, timeout_s: float, what: str) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while len(set(found := handled(path))) < at_least:
        assert time.monotonic() < deadline, f"{len(set(found))} of {at_least} {what}"
        await asyncio.sleep(0.05)
    return found


@pytest.mark.parametrize("kind", sorted(BROKERS))
async def test_a_stream_survives_a_sigkill_of_the_platform(
    kind: str, database_url: str, tmp_path: Path
) -> None:
    one = BROKERS[kind]
    one.require()
    name = one.unique()
    await one.create(name)
    state, exposed = tmp_path / "state", shared(tmp_path)
    out = exposed / "handled"
    env = {"DATABASE_URL": database_url, "FN_SOURCE_LOCK_RETRY": "0.2"}
    payloads = [json.dumps({"n": n}).encode() for n in range(MESSAGES)]
    try:
        with platforms(state) as running:
            first = await asyncio.to_thread(FnUp, state, exposed, **env)
            running.append(first)
            first.client.api(
                "POST",
                "/v1/functions",
                {
                    "name": "count",
                    "source": COUNTER,
                    "filename": "handler.py",
                    "env": {"OUT": str(out)},
                    "concurrency": 4,
                },
            )
            first.client.api("POST", "/v1/functions/count/triggers", one.trigger(name))
            # The stream goes on while the platform is killed and comes back.
            publisher = asyncio.create_task(_publish_slowly(one, name, payloads))
            await wait_handled(out, 200, 60, f"handled before the kill: {first.log()}")
            await asyncio.to_thread(first.kill)
            killed_at = len(handled(out))
            second = await asyncio.to_thread(FnUp, state, exposed, **env)
            running.append(second)
            await publisher
            found = await wait_handled(out, MESSAGES, 90, f"handled: {second.log()}")
            assert set(found) == set(range(MESSAGES))
            duplicates = len(found) - MESSAGES
            print(
                f"{kind}: {MESSAGES} messages, killed after {killed_at} handled, "
                f"{duplicates} handled twice"
            )
            assert killed_at < MESSAGES, "the kill came after the whole stream"
            await asyncio.to_thread(second.stop)
    finally:
        await one.remove(name)


async def _publish_slowly(one: Broker, name: str, payloads: list[bytes]) -> None:
    """In chunks of 50 every 20 ms: about half a second of stream at least."""
    for i in range(0, len(payloads), 50):
        await one.publish(name, payloads[i : i + 50])
        await asyncio.sleep(0.02)
