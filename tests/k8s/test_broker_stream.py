"""The scheduler's event stream to a gateway: a pod that died while the gateway's stream was down
is reported with its exit code when it reconnects (not as "unknown to the scheduler")."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
import orjson
from aiohttp import web

from scheduler.backends.kubernetes import GATEWAY_LABEL
from scheduler.backends.kubernetes.pods import PodView
from scheduler.service import Broker, ServiceSettings


class _Pool:
    """What the broker uses of the pod pool: the pods a gateway owns, and death callbacks."""

    def __init__(self) -> None:
        self.on_gone: list[Any] = []
        self.owned: list[PodView] = []

    def owned_by(self, gateway: str) -> list[PodView]:
        return self.owned


def _pod(name: str, exit_code: int | None) -> PodView:
    return PodView(
        name=name,
        uid=name,
        resource_version="1",
        labels={GATEWAY_LABEL: "gw-1"},
        phase="Failed",
        ready=False,
        ip=None,
        deleting=False,
        memory_bytes=0,
        exit_code=exit_code,
    )


async def test_a_death_missed_while_the_stream_was_down_is_replayed_with_its_exit_code() -> None:
    broker = Broker(ServiceSettings(database_url="postgresql://unused", token="t"))
    pool = _Pool()
    broker.attach(cast(Any, pool))
    pool.owned = [_pod("alive", None)]
    broker._gone(_pod("died", 3), "Failed")  # no stream is connected: nobody hears it now
    runner = web.AppRunner(broker.app(), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with (
            aiohttp.ClientSession(headers={"Authorization": "Bearer t"}) as http,
            http.get(f"http://{host}:{port}/v1/gateways/gw-1/events") as response,
        ):
            first = orjson.loads(await response.content.readline())
            second = orjson.loads(await response.content.readline())
    finally:
        await runner.cleanup()
    assert first == {"gone": "died", "reason": "Failed", "exit_code": 3}
    assert second == {"pods": ["alive"]}
