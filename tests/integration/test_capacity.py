"""The node's capacity on a real platform: 2 instances at most, the least valued idle one evicted,
503 with a JSON body when every instance is busy."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.conftest import PlatformFactory, Running, shared

PID = "import os\n\ndef handler(event, context):\n    return os.getpid()\n"


def hold(flag_dir: Path) -> str:
    """A handler that answers once the test removes its flag file (no sleeping on a guess)."""
    return (
        "import os, time\n\n"
        "def handler(event, context):\n"
        f"    flag = {str(flag_dir / 'hold')!r}\n"
        "    while os.path.exists(flag):\n"
        "        time.sleep(0.01)\n"
        "    return os.getpid()\n"
    )


async def metric(running: Running, name: str) -> float:
    async with running.http.get(f"{running.url}/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_a_full_node_evicts_an_idle_instance_and_refuses_when_all_are_busy(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    flags = shared(tmp_path)
    async with make_platform(pool={"max_total_instances": 2, "generic_pool_size": 0}) as running:
        for name in ("a", "b", "c"):
            await running.deploy_ok(name, PID)
        pids = {}
        for name in ("a", "b", "c"):
            response = await running.call(name, {})
            assert response.status == 200, await response.text()
            pids[name] = await response.json()
            assert len(running.platform.scheduler.pool.instances) <= 2
        assert await metric(running, "ember_evictions_total") >= 1
        assert await metric(running, "ember_instance_capacity") == 2

        await running.deploy_ok("slow", hold(flags))
        (flags / "hold").touch()
        busy = [asyncio.create_task(running.call("slow", {})) for _ in range(2)]
        await running.platform.scheduler.wait_until(
            lambda: sum(i.busy for i in running.platform.scheduler.pool.instances.values()) == 2,
            20,
        )
        refused = await running.call("a", {})
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        error = (await refused.json())["error"]
        assert error["code"] == "at_capacity"
        assert "FN_MAX_INSTANCES_TOTAL" in error["message"]
        (flags / "hold").unlink()
        for task in busy:
            assert (await task).status == 200


async def test_a_function_larger_than_the_node_is_refused_at_deploy(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool={"max_total_memory_bytes": 512 << 20}) as running:
        response = await running.deploy("huge", PID, memory="1Gi")
        assert response.status == 503
        error = (await response.json())["error"]
        assert error["code"] == "at_capacity"
        assert '"huge" needs 1024 MiB' in error["message"]
