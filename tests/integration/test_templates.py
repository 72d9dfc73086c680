"""Function templates: after a version is specialized once, its next instances are forks of a
template that imported it already (`scheduler.backends.templates`, `invoker.template`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from typing import Any, cast

import psutil
import pytest

from scheduler.backends import templates as templates_module
from scheduler.backends.cgroups import RUNTIME_MEMORY_BYTES
from scheduler.backends.local import LocalBackend
from scheduler.backends.templates import Templates
from scheduler.live import Prepared, specialize_meta
from scheduler.scheduler import Scheduler
from store.records import Version
from tests.conftest import PlatformFactory, Running

STATEFUL = textwrap.dedent("""
    import os
    import random
    import time

    imported_at = time.time()  # module-level code: runs once, in the template
    calls = 0

    def handler(event, context):
        global calls
        calls += 1
        time.sleep(event.get("sleep_s", 0))
        return {
            "pid": os.getpid(),
            "calls": calls,
            "random": random.random(),
            "imported_at": imported_at,
        }
""")
FAST_SCALE_TO_ZERO = {"keep_alive_s": 0.3, "generic_pool_size": 1}


@pytest.fixture
def make_platform(make_platform: PlatformFactory) -> PlatformFactory:
    """Every import counts as slow here: a version's template is made after its first
    instance, the deploy's (test_template_rules.py tests when one is made by default)."""

    def start(*, pool: dict[str, Any] | None = None, **overrides: Any) -> Any:
        return make_platform(pool={"template_slow_import_s": 0.0, **(pool or {})}, **overrides)

    return cast(PlatformFactory, start)


@pytest.fixture
async def running(make_platform: PlatformFactory) -> AsyncIterator[Running]:
    async with make_platform() as r:
        yield r


def _templates(running: Running) -> Templates:
    backend = running.platform.scheduler.backend
    assert isinstance(backend, LocalBackend)
    assert backend.templates is not None
    return backend.templates


async def _template_ready(running: Running, name: str, version: int) -> None:
    templates = _templates(running)
    key = (name, version)
    await templates.wait_until(lambda: key in templates.by_key or key in templates.refused, 20)
    assert key in templates.by_key, templates.refused.get(key)


async def _cold_call(running: Running, name: str) -> tuple[dict[str, object], bool]:
    """Call `name` after it scaled to zero: its answer, and whether the call was cold."""
    scheduler = running.platform.scheduler
    await scheduler.wait_until(lambda: not scheduler.instances_of(name), 10)
    response = await running.call(name, {})
    assert response.status == 200, await response.text()
    _, activation = await running.admin(
        "GET", f"/v1/activations/{response.headers['X-Ember-Activation-Id']}"
    )
    answer: dict[str, object] = await response.json()
    return answer, bool(activation["cold"])


def _pid(scheduler: Scheduler, name: str) -> int:
    [instance] = scheduler.instances_of(name)
    pid = scheduler.pid_of(instance)
    assert pid is not None
    return pid


async def test_next_instances_are_forks_of_the_template(make_platform: PlatformFactory) -> None:
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        scheduler = running.platform.scheduler
        await running.deploy_ok("counter", STATEFUL)
        first = await (await running.call("counter", {})).json()  # the deploy's instance
        await _template_ready(running, "counter", 1)
        template = _templates(running).by_key[("counter", 1)]
        assert template.charge_bytes > 1 << 20  # its PSS, measured

        one, cold = await _cold_call(running, "counter")
        assert cold
        # A fork of the template, in a process group of its own; its module-level code did
        # not run again (the template ran it once, after the deploy's instance).
        pid = _pid(scheduler, "counter")
        assert psutil.Process(pid).ppid() not in (os.getpid(), template.handle.pid)
        assert os.getpgid(pid) == pid
        assert one["imported_at"] != first["imported_at"]
        assert one["calls"] == 1

        two, cold = await _cold_call(running, "counter")
        assert cold
        # Forks of one template share what it imported, and nothing after the fork: the
        # module-level counter starts again, random numbers differ.
        assert two["imported_at"] == one["imported_at"]
        assert two["calls"] == 1
        assert two["random"] != one["random"]
        assert two["pid"] != one["pid"]


async def test_forks_of_one_template_keep_separate_state(make_platform: PlatformFactory) -> None:
    async with make_platform(pool={"keep_alive_s": 0.5, "generic_pool_size": 0}) as running:
        scheduler = running.platform.scheduler
        await running.deploy_ok("counter", STATEFUL)
        await _template_ready(running, "counter", 1)
        await scheduler.wait_until(lambda: not scheduler.instances_of("counter"), 10)
        # Three calls at once, each busy for a while: three forks serve them.
        responses = await asyncio.gather(
            *(running.call("counter", {"sleep_s": 0.3}) for _ in range(3))
        )
        answers = [await r.json() for r in responses]
        assert len({a["pid"] for a in answers}) == 3
        assert [a["calls"] for a in answers] == [1, 1, 1]  # a counter each
        assert len({a["random"] for a in answers}) == 3  # reseeded at fork
        assert len({a["imported_at"] for a in answers}) == 1  # imported once, before


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_a_redeploy_drops_the_old_versions_template(make_platform: PlatformFactory) -> None:
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        templates = _templates(running)
        await running.deploy_ok("counter", STATEFUL)
        await _template_ready(running, "counter", 1)
        old = templates.by_key[("counter", 1)]

        await running.deploy_ok("counter", STATEFUL.replace("calls = 0", "calls = 100"))
        await _template_ready(running, "counter", 2)
        assert ("counter", 1) not in templates.by_key
        # Retired and without forks: it exits.
        await old.handle.wait()
        assert not _alive(old.handle.pid)
        answer, cold = await _cold_call(running, "counter")
        assert cold
        assert answer["calls"] == 101  # version 2's module, from version 2's template


async def test_a_delete_drops_the_template(make_platform: PlatformFactory) -> None:
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        templates = _templates(running)
        await running.deploy_ok("counter", STATEFUL)
        await _template_ready(running, "counter", 1)
        template = templates.by_key[("counter", 1)]
        status, _ = await running.admin("DELETE", "/v1/functions/counter")
        assert status == 200
        assert templates.by_key == {}
        await template.handle.wait()
        assert not _alive(template.handle.pid)
        assert templates.usage() == (0, 0)


async def test_module_state_a_fork_cannot_share_means_no_template(
    make_platform: PlatformFactory,
) -> None:
    threads = textwrap.dedent("""
        import threading, time

        threading.Thread(target=time.sleep, args=(3600,), name="poller", daemon=True).start()

        def handler(event, context):
            return {"threads": threading.active_count()}
    """)
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        templates = _templates(running)
        await running.deploy_ok("threads", threads)
        key = ("threads", 1)
        await templates.wait_until(lambda: key in templates.refused, 20)
        assert "started threads (poller)" in templates.refused[key]
        # Its instances import it as before: the thread runs in each of them.
        answer, cold = await _cold_call(running, "threads")
        assert cold
        assert answer == {"threads": 3}  # main, the output capture, the poller


async def test_a_template_whose_module_fails_is_refused_and_stopped(running: Running) -> None:
    templates = _templates(running)
    await running.deploy_ok("counter", STATEFUL)
    await _template_ready(running, "counter", 1)
    scheduler = running.platform.scheduler
    version = dataclasses.replace(scheduler._versions[("counter", 1)].version, version=7)
    meta = specialize_meta(version, 1 << 20)
    backend = scheduler.backend
    assert isinstance(backend, LocalBackend)
    code = b"raise RuntimeError('only in the template')\n"
    backend.keep_template(version, meta, code, keep_alive_s=1.0, fits=lambda: True)
    key = ("counter", 7)
    await templates.wait_until(lambda: key in templates.refused, 20)
    assert "RuntimeError: only in the template" in templates.refused[key]
    assert key not in templates.by_key
    assert templates.usage()[0] == 1  # version 1's; the failed one's process is stopped


async def test_templates_count_in_the_caps_and_give_their_room_up(
    make_platform: PlatformFactory,
) -> None:
    pool = {"max_total_instances": 2, "generic_pool_size": 0}
    async with make_platform(pool=pool) as running:
        scheduler = running.platform.scheduler
        templates = _templates(running)
        await running.deploy_ok("first", STATEFUL)
        await _template_ready(running, "first", 1)
        assert scheduler._usage()[0] == 2  # its instance and its template
        # Kept warm on purpose, its instance cannot be evicted: a second function's deploy
        # takes the template's room (the node holds 2).
        status, _ = await running.admin("PUT", "/v1/functions/first/policy", json={"min_warm": 1})
        assert status == 200
        template = templates.by_key[("first", 1)]
        await running.deploy_ok("second", STATEFUL)
        assert ("first", 1) not in templates.by_key
        await template.handle.wait()
        # No room left for a template of the second one: none is made.
        assert scheduler._usage()[0] == 2
        assert (await running.call("second", {})).status == 200
        assert templates.by_key == {}


def _memory_limit(handle: object) -> int:
    cgroup = getattr(handle, "cgroup", None)
    assert cgroup is not None, "no cgroup (walls off?)"
    target = cgroup._file("memory.max") or cgroup._file("memory.limit_in_bytes")
    assert target is not None
    return int(target.read_text())


async def test_a_fork_has_its_versions_limits_before_it_runs(
    make_platform: PlatformFactory,
) -> None:
    # A fork is told go (and a spare waits, listening, for as long as no call comes) before
    # it is specialized: its cgroup must hold the version's --memory and CPU from the start,
    # not a generic instance's 256 MiB (an at-fork hook or a signal handler runs meanwhile).
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        await running.deploy_ok("small", STATEFUL, memory="64Mi")
        await _template_ready(running, "small", 1)
        templates = _templates(running)
        template = templates.by_key[("small", 1)]
        backend = running.platform.scheduler.backend
        assert isinstance(backend, LocalBackend)
        limit = (64 << 20) + RUNTIME_MEMORY_BYTES  # the version's (the template has it)
        assert _memory_limit(template.handle) == limit
        handle = await templates.fork(template, "probe", f"unix:{backend._socket_dir}/probe.sock")
        try:
            assert _memory_limit(handle) == limit
        finally:
            await backend.stop_instance(handle, grace_s=0.5)


async def test_a_template_dropped_while_it_is_measured_is_not_kept(
    make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its PSS is measured after the import: a delete (or a secret's rotation, or a redeploy)
    # then found it neither being made nor kept, and it was kept afterwards, with the old
    # code and secrets, for the next instances of that name and version to be forked from.
    measuring = asyncio.Event()
    release = threading.Event()
    loop = asyncio.get_running_loop()
    measure = templates_module.template_pss_bytes

    measured: list[int] = []

    def slow_measure(pid: int) -> int:
        measured.append(pid)
        loop.call_soon_threadsafe(measuring.set)
        release.wait(20)
        return measure(pid)

    monkeypatch.setattr(templates_module, "template_pss_bytes", slow_measure)
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        templates = _templates(running)
        await running.deploy_ok("counter", STATEFUL)
        await measuring.wait()
        [making] = templates._making.values()
        status, _ = await running.admin("DELETE", "/v1/functions/counter")
        assert status == 200
        release.set()
        await asyncio.gather(making, return_exceptions=True)
        assert templates.by_key == {}
        assert templates.usage() == (0, 0)
        assert not _alive(measured[0])  # stopped


HOARDER = textwrap.dedent("""
    import os

    hoard = []
    # Runs in the template at each fork, after its PSS was measured.
    os.register_at_fork(before=lambda: hoard.append(b"x" * (96 << 20)))

    def handler(event, context):
        return {"ok": True}
""")


async def test_a_template_that_grows_after_it_was_measured_is_charged_for_it(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        await running.deploy_ok("hoarder", HOARDER)
        await _template_ready(running, "hoarder", 1)
        templates = _templates(running)
        template = templates.by_key[("hoarder", 1)]
        backend = running.platform.scheduler.backend
        assert isinstance(backend, LocalBackend)
        probes = [
            await templates.fork(template, name, f"unix:{backend._socket_dir}/{name}.sock")
            for name in ("probe-1", "probe-2")
        ]
        try:  # 192 MiB more now, charged 30 MiB or so when it was measured
            assert templates.usage()[1] >= 192 << 20
        finally:
            for handle in probes:
                await backend.stop_instance(handle, grace_s=0.5)


CLINGY = textwrap.dedent("""
    import invoker.template as template

    reap = template._reap
    # The template reaps and reports its forks, but never forgets them: retired, it would
    # wait for them forever (no longer charged, the function deleted).
    template._reap = lambda sock, children: reap(sock, set(children))

    def handler(event, context):
        return {"ok": True}
""")


async def test_a_retired_template_that_will_not_exit_is_stopped(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        await running.deploy_ok("clingy", CLINGY)
        await _template_ready(running, "clingy", 1)
        templates = _templates(running)
        template = templates.by_key[("clingy", 1)]
        _, cold = await _cold_call(running, "clingy")  # a fork: a child it will not forget
        assert cold
        status, _ = await running.admin("DELETE", "/v1/functions/clingy")
        assert status == 200
        assert templates.usage() == (0, 0)  # no longer charged: it must not stay
        async with asyncio.timeout(15):
            await template.handle.wait()
        assert not _alive(template.handle.pid)


LIAR = textwrap.dedent("""
    import invoker.template as template

    write = template._write

    def lie(sock, line):
        if line.startswith("forked "):
            {lie}
        else:
            write(sock, line)

    template._write = lie

    def handler(event, context):
        return {{"ok": True}}
""")


@pytest.mark.parametrize(
    "lie",
    [
        # not a pid: the reader raised at it, the fork's future was never answered
        'write(sock, line.rsplit(" ", 1)[0] + " not-a-pid\\n")',
        # no end of line, ever: the platform kept it all (8 MiB here)
        'for _ in range(128): write(sock, "x" * 65536)',
    ],
    ids=["bad-pid", "endless-line"],
)
async def test_a_template_that_lies_in_its_reports_is_stopped(
    make_platform: PlatformFactory, lie: str
) -> None:
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        await running.deploy_ok("liar", LIAR.format(lie=lie))
        await _template_ready(running, "liar", 1)
        templates = _templates(running)
        template = templates.by_key[("liar", 1)]
        # Asked for a fork for a cold start, it lies: it is stopped, and the instance is a
        # generic one that imports the function.
        _, cold = await _cold_call(running, "liar")
        assert cold
        async with asyncio.timeout(10):
            await template.handle.wait()
        assert len(template.pending) <= 1 << 16
        assert templates.usage() == (0, 0)


async def test_an_instance_retired_while_it_specialized_leaves_no_template(
    make_platform: PlatformFactory,
) -> None:
    # Its specialization read the function's secrets before a rotation (or a delete) retired
    # it, during its import: a template made of it would fork every later instance with the
    # old values (or the deleted code).
    entered, release = asyncio.Event(), asyncio.Event()
    armed = False
    async with make_platform(pool=FAST_SCALE_TO_ZERO) as running:
        scheduler = running.platform.scheduler
        templates = _templates(running)
        prepare, connection = scheduler._prepare, scheduler._connection
        assert prepare is not None

        async def no_template_of_the_check(version: Version) -> Prepared:
            if sys._getframe(1).f_code.co_name == "_template_of":
                raise RuntimeError("not from the deploy's check: from a cold start")
            return await prepare(version)

        class Importing:
            """The instance's connection; its import's answer comes once the test says."""

            def __init__(self, conn: Any) -> None:
                self.conn = conn

            def __getattr__(self, name: str) -> Any:
                return getattr(self.conn, name)

            async def call(self, *args: Any) -> Any:
                reply = await self.conn.call(*args)
                entered.set()
                await release.wait()
                return reply

        async def gated(instance: Any) -> Any:
            conn = await connection(instance)
            return Importing(conn) if armed and not entered.is_set() else conn

        scheduler._prepare = no_template_of_the_check
        scheduler._connection = gated  # type: ignore[method-assign]
        await running.deploy_ok("gone", STATEFUL)
        await scheduler.wait_until(lambda: not scheduler.instances_of("gone"), 10)
        armed = True
        call = asyncio.create_task(running.call("gone", {}))
        await entered.wait()  # a cold start read the secrets, and imported
        [start] = [t for t in asyncio.all_tasks() if t.get_name().startswith("start ")]
        status, _ = await running.admin("DELETE", "/v1/functions/gone")
        assert status == 200
        release.set()
        await asyncio.gather(start, call, return_exceptions=True)
        assert not templates._making
        assert templates.by_key == {}
