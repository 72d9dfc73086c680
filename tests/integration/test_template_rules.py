"""When a version gets a template, how many are kept, and when one keeps a spare fork
(`scheduler.upkeep._keep_template`, `scheduler.backends.templates`): templates only where they
pay, with the default settings but for the one each test is about."""

from __future__ import annotations

import textwrap
import time

import psutil
import pytest

from scheduler.backends import templates as templates_module
from scheduler.backends.local import LocalBackend
from scheduler.backends.templates import Templates
from tests.conftest import PlatformFactory, Running

MODULE = textwrap.dedent("""
    import os
    import time

    imported_at = time.time()  # module-level code: once per import

    def handler(event, context):
        return {"pid": os.getpid(), "imported_at": imported_at}
""")
SLOW = (  # a heavy import, as requests or numpy: 0.1 s of CPU
    "import time\n\nt0 = time.process_time()\nwhile time.process_time() - t0 < 0.1:\n"
    "    pass\n" + MODULE
)
NEVER_SLOW = {"keep_alive_s": 0.3, "generic_pool_size": 1, "template_slow_import_s": 60.0}


def _templates(running: Running) -> Templates:
    backend = running.platform.scheduler.backend
    assert isinstance(backend, LocalBackend)
    assert backend.templates is not None
    return backend.templates


async def _template_ready(templates: Templates, key: tuple[str, int]) -> None:
    await templates.wait_until(lambda: key in templates.by_key or key in templates.refused, 20)
    assert key in templates.by_key, templates.refused.get(key)


async def _cold_call(running: Running, name: str) -> dict[str, object]:
    scheduler = running.platform.scheduler
    await scheduler.wait_until(lambda: not scheduler.instances_of(name), 10)
    response = await running.call(name, {})
    assert response.status == 200, await response.text()
    answer: dict[str, object] = await response.json()
    return answer


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_no_template_after_a_deploy_one_after_the_version_cold_starts_again(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool=NEVER_SLOW) as running:
        templates = _templates(running)
        key = ("counter", 1)
        await running.deploy_ok("counter", MODULE)
        first = await (await running.call("counter", {})).json()  # the deploy's instance
        # Nothing asked for, nothing being made: none will be.
        assert (templates.wanted, templates._making, templates.by_key) == ({}, {}, {})

        again = await _cold_call(running, "counter")  # its second import on this node
        assert again["imported_at"] != first["imported_at"]
        assert key in templates.wanted or key in templates._making or key in templates.by_key
        await _template_ready(templates, key)

        # Forks of the template: its module-level code ran once, in the template.
        forked = await _cold_call(running, "counter")
        assert forked["imported_at"] not in (first["imported_at"], again["imported_at"])
        assert (await _cold_call(running, "counter"))["imported_at"] == forked["imported_at"]


async def test_a_slow_import_earns_a_template_after_the_first_instance(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool={"keep_alive_s": 0.3, "generic_pool_size": 1}) as running:
        templates = _templates(running)
        await running.deploy_ok("heavy", SLOW)
        first = await (await running.call("heavy", {})).json()  # the deploy's instance
        await _template_ready(templates, ("heavy", 1))
        answer = await _cold_call(running, "heavy")  # its first cold start: already a fork
        assert answer["imported_at"] != first["imported_at"]
        assert (await _cold_call(running, "heavy"))["imported_at"] == answer["imported_at"]


async def test_at_the_bound_the_least_recently_used_template_is_retired(
    make_platform: PlatformFactory,
) -> None:
    pool = {"keep_alive_s": 0.3, "generic_pool_size": 1, "template_slow_import_s": 0.0}
    async with make_platform(pool=pool, max_templates=2) as running:
        templates = _templates(running)
        for name in ("a", "b"):
            await running.deploy_ok(name, MODULE)
            await _template_ready(templates, (name, 1))
        a, b = templates.by_key[("a", 1)], templates.by_key[("b", 1)]
        await _cold_call(running, "a")  # a forked last: b is the least recently used
        await running.deploy_ok("c", MODULE)
        await _template_ready(templates, ("c", 1))
        assert set(templates.by_key) == {("a", 1), ("c", 1)}
        assert b.retired
        assert not a.retired
        await b.handle.wait()  # retired, without forks: its process exits
        assert not _alive(b.handle.pid)
        assert _alive(a.handle.pid)
        assert (await running.call("b", {})).status == 200  # (it imports again)


async def test_a_template_keeps_a_spare_fork_only_while_it_is_used(
    make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_alive_s = 1.0
    monkeypatch.setattr(templates_module, "SPARE_MIN_KEEP_S", 0.0)  # (60 s)
    pool = {"keep_alive_s": keep_alive_s, "generic_pool_size": 1, "template_slow_import_s": 0.0}
    async with make_platform(pool=pool) as running:
        scheduler = running.platform.scheduler
        templates = _templates(running)
        key = ("counter", 1)
        await running.deploy_ok("counter", MODULE)
        await _template_ready(templates, key)
        template = templates.by_key[key]
        assert template.spare is None  # never forked: no spare
        assert template.filling is None
        assert templates.usage()[0] == 1

        await _cold_call(running, "counter")  # a fork
        assert template.filling is not None  # used: a spare is made for the next
        await template.filling
        spare = template.spare
        assert spare is not None
        assert _alive(spare.pid)
        assert templates.usage()[0] == 2  # the spare is charged as an instance

        # It outlives the version's instance (for the next cold start), by the keep-alive.
        await scheduler.wait_until(lambda: not scheduler.instances_of("counter"), 15)
        [fork] = [h for h in template.handed if h is not spare]
        await fork.wait()
        gone_at = time.monotonic()
        assert template.spare is spare
        await spare.wait()
        assert time.monotonic() - gone_at >= keep_alive_s - 0.1
        assert template.spare is None
        assert key in templates.by_key
        assert _alive(template.handle.pid)
        assert templates.usage()[0] == 1
