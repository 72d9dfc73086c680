"""The warm pool machinery: zygote forks, the generic pool and its refill."""

from __future__ import annotations

import os
import stat
import textwrap

import psutil

from scheduler.backends.local import LocalBackend
from scheduler.pool import State
from tests.conftest import PlatformFactory

PID = textwrap.dedent("""
    import os

    def handler(event, context):
        return os.getpid()
""")


async def test_instances_are_forked_by_the_zygote(make_platform: PlatformFactory) -> None:
    async with make_platform() as running:
        await running.deploy_ok("pid", PID)
        assert (await running.call("pid", {})).status == 200
        backend = running.platform.scheduler.backend
        assert isinstance(backend, LocalBackend)
        assert backend.zygote_pid is not None
        [instance] = running.platform.scheduler.instances_of("pid")
        pid = running.platform.scheduler.pid_of(instance)
        assert pid is not None
        assert psutil.Process(pid).ppid() == backend.zygote_pid
        assert psutil.Process(backend.zygote_pid).cmdline()[-1] == "--zygote"
        # It listens on a Unix socket that only the platform's user can open.
        path = running.platform.scheduler.address_of(instance).removeprefix("unix:")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


async def test_generic_pool_refills_after_a_cold_start(make_platform: PlatformFactory) -> None:
    async with make_platform(pool={"generic_pool_size": 2}) as running:
        scheduler = running.platform.scheduler
        await scheduler.wait_until(lambda: scheduler.pool.generic_ready() == 2, 10)
        generics = {i.id for i in scheduler.pool.instances.values() if i.state is State.GENERIC}

        await running.deploy_ok("pid", PID)  # the import check takes one generic instance
        [instance] = scheduler.instances_of("pid")
        assert instance.id in generics
        await scheduler.wait_until(lambda: scheduler.pool.generic_ready() == 2, 10)
        assert scheduler.starts_total == 3


async def test_cold_start_after_scale_to_zero_is_served_by_the_generic_pool(
    make_platform: PlatformFactory,
) -> None:
    pool = {"keep_alive_s": 0.2, "generic_pool_size": 1}
    async with make_platform(pool=pool, templates=False) as running:  # (else: a fork of one)
        scheduler = running.platform.scheduler
        await running.deploy_ok("pid", PID)
        await scheduler.wait_until(lambda: not scheduler.instances_of("pid"), 10)
        await scheduler.wait_until(lambda: scheduler.pool.generic_ready() == 1, 10)
        [generic] = [i for i in scheduler.pool.instances.values() if i.state is State.GENERIC]
        starts_before = scheduler.starts_total

        response = await running.call("pid", {})
        assert response.status == 200
        _, activation = await running.admin(
            "GET", f"/v1/activations/{response.headers['X-Ember-Activation-Id']}"
        )
        assert activation["cold"] is True
        # Served by the instance that was waiting generic, not by a process started for it.
        assert [i.id for i in scheduler.instances_of("pid")] == [generic.id]
        await scheduler.wait_until(lambda: scheduler.pool.generic_ready() == 1, 10)
        assert scheduler.starts_total == starts_before + 1  # the refill, off the request path


async def test_without_a_generic_pool_a_cold_start_forks_a_new_instance(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool={"keep_alive_s": 0.2, "generic_pool_size": 0}) as running:
        scheduler = running.platform.scheduler
        await running.deploy_ok("pid", PID)
        await scheduler.wait_until(lambda: not scheduler.instances_of("pid"), 10)
        before = scheduler.starts_total
        assert (await running.call("pid", {})).status == 200
        assert scheduler.starts_total == before + 1
        assert scheduler.pool.generic_ready() == 0


async def test_cache_follows_a_deploy_made_by_another_gateway(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform() as first, make_platform() as second:
        await first.deploy_ok("pid", PID)
        assert (await second.call("pid", {})).status == 200  # second caches version 1
        since = second.platform.functions.generation("pid")
        await first.deploy_ok("pid", PID.replace("os.getpid()", "'v2'"))
        # The second gateway learns of version 2 by NOTIFY; no request of its own told it.
        await second.platform.functions.wait_invalidated("pid", since, 10)
        assert await (await second.call("pid", {})).text() == "v2"


async def test_other_gateways_follow_a_delete_and_a_new_version(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform() as first, make_platform() as second:
        await first.deploy_ok("pid", PID)
        status, _ = await first.admin("PUT", "/v1/functions/pid/policy", json={"min_warm": 1})
        assert status == 200
        assert (await second.call("pid", {})).status == 200
        scheduler = second.platform.scheduler
        assert [i.key for i in scheduler.instances_of("pid")] == [("pid", 1)]
        # A new version deployed on the first gateway: the second keeps it at min_warm too,
        # before any call of its own.
        await first.deploy_ok("pid", PID.replace("os.getpid()", "'v2'"))
        await scheduler.wait_until(
            lambda: any(
                i.key == ("pid", 2) and i.state is State.READY
                for i in scheduler.instances_of("pid")
            ),
            10,
        )
        # Deleted on the first gateway: the second stops its instances now, not after the
        # keep-alive.
        status, _ = await first.admin("DELETE", "/v1/functions/pid")
        assert status == 200
        await scheduler.wait_until(lambda: not scheduler.instances_of("pid"), 10)
        assert not scheduler.knows("pid")


async def test_without_the_zygote_instances_are_fresh_interpreters(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(zygote=False) as running:
        await running.deploy_ok("pid", PID)
        pid = await (await running.call("pid", {})).json()
        backend = running.platform.scheduler.backend
        assert isinstance(backend, LocalBackend)
        assert backend.zygote_pid is None
        instance = psutil.Process(pid)
        assert instance.ppid() == os.getpid()
        await running.admin("DELETE", "/v1/functions/pid")
        _, alive = psutil.wait_procs([instance], timeout=10)
        assert not alive
