"""Policies set over the API apply at once to the live pool."""

from __future__ import annotations

import asyncio
import math
import textwrap

from scheduler.policy import HybridHistogram
from tests.conftest import PlatformFactory, Running

PID = textwrap.dedent("""
    import os

    def handler(event, context):
        return os.getpid()
""")


async def test_set_show_and_reset_a_function_policy(running: Running) -> None:
    await running.deploy_ok("pid", PID)
    status, data = await running.admin("GET", "/v1/functions/pid/policy")
    assert status == 200
    assert (data["prewarm"], data["keep_alive_s"], data["set"]) == ("adaptive", 600.0, {})

    status, data = await running.admin(
        "PUT",
        "/v1/functions/pid/policy",
        json={"prewarm": "histogram", "keep_alive": "2m", "max_instances": 3},
    )
    assert status == 200
    assert (data["prewarm"], data["keep_alive_s"], data["max_instances"]) == ("histogram", 120.0, 3)
    assert running.platform.scheduler.policies.settings("pid").max_instances == 3
    status, data = await running.admin(
        "PUT", "/v1/functions/pid/policy", json={"prewarm": "histogram-cost"}
    )
    assert (status, data["prewarm"], data["keep_alive_s"]) == (200, "histogram-cost", 120.0)

    # One field unset: inherited again; the others stay.
    status, data = await running.admin(
        "PUT", "/v1/functions/pid/policy", json={"unset": ["keep_alive"]}
    )
    assert (status, data["keep_alive_s"], data["set"]) == (
        200,
        600.0,
        {"prewarm": "histogram-cost", "max_instances": 3},
    )
    status, data = await running.admin(
        "PUT", "/v1/functions/pid/policy", json={"unset": ["keep_alive"], "keep_alive": "1m"}
    )
    assert (status, data["error"]["code"]) == (400, "bad_policy")
    status, data = await running.admin(
        "PUT", "/v1/functions/pid/policy", json={"unset": ["colour"]}
    )
    assert (status, data["error"]["setting"]) == (400, "--unset")

    status, data = await running.admin("PUT", "/v1/policy", json={"keep_alive": "30s"})
    assert (status, data["keep_alive_s"]) == (200, 30.0)
    status, data = await running.admin("DELETE", "/v1/functions/pid/policy")
    assert (data["prewarm"], data["keep_alive_s"], data["set"]) == ("adaptive", 30.0, {})
    status, data = await running.admin("GET", "/v1/policies")
    assert data["default"]["set"] == {"keep_alive_s": 30.0}


async def test_bad_policy_values_are_rejected(running: Running) -> None:
    status, data = await running.admin("PUT", "/v1/functions/nosuch/policy", json={"min_warm": 1})
    assert status == 404
    assert "fn deploy nosuch.py" in data["error"]["message"]
    await running.deploy_ok("pid", PID)
    cases: tuple[tuple[dict[str, object], str], ...] = (
        ({"prewarm": "lru"}, "--prewarm"),
        ({"keep_alive": "-1"}, "--keep-alive"),
        ({"min_warm": -1}, "--min-warm"),
        ({"max_instances": 0}, "--max-instances"),
        ({}, "nothing to set"),
        ({"min_warm": 3, "max_instances": 2}, "cannot exceed max-instances"),
    )
    for body, message in cases:
        status, data = await running.admin("PUT", "/v1/functions/pid/policy", json=body)
        assert status == 400, body
        assert message in data["error"]["message"]


async def test_a_shorter_keep_alive_applies_to_idle_instances_now(running: Running) -> None:
    # Fixed keep-alive semantics (the default is adaptive): set explicitly.
    status, _ = await running.admin("PUT", "/v1/policy", json={"prewarm": "fixed"})
    assert status == 200
    await running.deploy_ok("pid", PID)
    assert (await running.call("pid", {})).status == 200
    scheduler = running.platform.scheduler
    assert len(scheduler.instances_of("pid")) == 1  # kept 10 minutes by default
    status, _ = await running.admin("PUT", "/v1/functions/pid/policy", json={"keep_alive": "0"})
    assert status == 200
    await scheduler.wait_until(lambda: not scheduler.instances_of("pid"), 10)


async def test_min_warm_starts_instances_and_keeps_them(make_platform: PlatformFactory) -> None:
    async with make_platform(pool={"keep_alive_s": 0.1}) as running:
        await running.deploy_ok("pid", PID)
        scheduler = running.platform.scheduler
        status, _ = await running.admin("PUT", "/v1/functions/pid/policy", json={"min_warm": 2})
        assert status == 200
        await scheduler.wait_until(
            lambda: (
                len(scheduler.instances_of("pid")) == 2
                and all(i.keep_until == math.inf for i in scheduler.instances_of("pid"))
            ),
            10,
        )
        # Idle far past the keep-alive, and still there.
        assert len(scheduler.instances_of("pid")) == 2


async def test_histogram_prewarms_ahead_of_a_regular_caller(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool={"keep_alive_s": 30}) as running:
        scheduler = running.platform.scheduler
        # A fast histogram (0.1 s bins) so that a regular caller is learnt in seconds.
        fast = HybridHistogram(bin_s=0.1, range_s=5.0, min_samples=3)
        scheduler.policies.use_histograms({**scheduler.policies.histograms, "histogram": fast})
        await running.deploy_ok("pid", PID)
        status, _ = await running.admin(
            "PUT", "/v1/functions/pid/policy", json={"prewarm": "histogram"}
        )
        assert status == 200
        for _ in range(6):  # the workload: a call every 0.5 s, from 0.5 s after the deploy
            await asyncio.sleep(0.5)
            assert (await running.call("pid", {})).status == 200
        # Learnt: after a call the instance is unloaded, and one is prewarmed before the next.
        assert scheduler.prewarm_starts.get("pid", 0) >= 1
        assert scheduler.pool.prewarm_outcomes.get(("pid", "used"), 0) >= 1
        async with running.http.get(f"{running.url}/metrics") as response:
            text = await response.text()
        assert 'ember_prewarms_total{function="pid"}' in text
        assert 'ember_prewarm_outcomes_total{function="pid",outcome="used"}' in text
        assert 'ember_warm_hits_total{function="pid"}' in text
        assert 'ember_idle_instance_seconds_total{function="pid"}' in text
        assert "# TYPE ember_warm_instances gauge" in text


async def test_every_policy_the_api_accepts_can_be_stored(running: Running) -> None:
    """Each `prewarm` value the API takes is stored, as the default and per function (the
    database's check once refused `adaptive`, the default itself, with a 500)."""
    await running.deploy_ok("pid", PID)
    for prewarm in ("fixed", "histogram", "histogram-cost", "adaptive"):
        for path in ("/v1/policy", "/v1/functions/pid/policy"):
            status, data = await running.admin("PUT", path, json={"prewarm": prewarm})
            assert (status, data["prewarm"]) == (200, prewarm), data
