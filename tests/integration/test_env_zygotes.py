"""Zygotes of trusted environments: the first instance of a new function whose environment the
operator trusts is a fork of a process that imported its packages already, walled in and
specialized as every instance (`scheduler.backends.env_zygotes`, `invoker.env_zygote`)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import psutil

from scheduler.backends.env_zygotes import SPARE_BYTES, EnvZygote, EnvZygotes
from scheduler.backends.local import LocalBackend
from tests.conftest import Running
from tests.integration.custom_envs import store_environment

REQUESTS = "requests==2.32.3\n"
SIX = "six==1.16.0\n"


def _handler(module: str) -> str:
    return textwrap.dedent(f"""
        import os
        import sys

        PRELOADED = "{module}" in sys.modules  # before this module imports it
        import {module}

        state = []

        def handler(event, context):
            if "append" in event:
                state.append(event["append"])
            status = dict(l.split(":\\t", 1) for l in open("/proc/self/status") if ":\\t" in l)
            return {{
                "preloaded": PRELOADED,
                "state": state,
                "uid": os.getuid(),
                "pid": os.getpid(),
                "seccomp": status["Seccomp"].strip(),
                "no_new_privs": status["NoNewPrivs"].strip(),
            }}
    """)


def _zygotes(running: Running) -> EnvZygotes:
    backend = running.platform.scheduler.backend
    assert isinstance(backend, LocalBackend)
    assert backend.env_zygotes is not None
    return backend.env_zygotes


async def _ready(running: Running, env_hash: str) -> EnvZygote:
    """The environment's zygote, once made (awaiting its making)."""
    known = _zygotes(running).trusted[env_hash]
    if known.making is not None:
        await asyncio.wait_for(asyncio.shield(known.making), 30)
    assert known.ready, known.failure
    return known


async def _answer(running: Running, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = await running.call(name, payload)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def _host_pids(running: Running, name: str) -> list[int]:
    status, data = await running.admin("GET", f"/v1/functions/{name}")
    assert status == 200, data
    return list(data["instances"]["pids"])


async def test_a_new_function_of_a_trusted_environment_is_forked_from_its_zygote(
    running: Running,
) -> None:
    first = await running.deploy_ok("first", _handler("requests"), requirements=REQUESTS)
    env_hash = first["environment"]
    assert (await _answer(running, "first", {}))["preloaded"] is False  # (not trusted yet)

    status, trusted = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200, trusted
    # What the operator trusted: every package installed, not only requests.
    assert "requests==2.32.3 --hash=sha256:" in trusted["lock"]
    assert "urllib3==" in trusted["lock"]
    known = await _ready(running, env_hash)
    assert "requests" in known.imported
    zygote = psutil.Process(known.zygote.process.pid if known.zygote else 0)
    assert zygote.ppid() == running.platform.scheduler.backend.zygote_pid  # type: ignore[attr-defined]

    # It keeps a spare fork, walled in already, for the next cold start.
    if known.refilling is not None:
        await asyncio.wait_for(asyncio.shield(known.refilling), 10)
    spare = known.spare
    assert spare is not None

    # New functions of that environment: their first instance (the deploy's import check,
    # then their first call) is a fork of the zygote, with requests imported already...
    await running.deploy_ok("second", _handler("requests"), requirements=REQUESTS)
    assert await _host_pids(running, "second") == [spare.pid]
    await running.deploy_ok("third", _handler("requests"), requirements=REQUESTS)
    second = await _answer(running, "second", {"append": "a"})
    third = await _answer(running, "third", {})
    assert second["preloaded"] is True
    assert third["preloaded"] is True
    for name in ("second", "third"):
        (pid,) = await _host_pids(running, name)
        assert psutil.Process(pid).ppid() == zygote.pid  # its init is the zygote's child
    # ...under its own walls: its own uid, the seccomp filter, its own PID namespace...
    assert second["uid"] >= 1500000000
    assert third["uid"] >= 1500000000
    assert second["uid"] != third["uid"]
    assert second["seccomp"] == third["seccomp"] == "2"
    assert second["no_new_privs"] == "1"
    assert second["pid"] == 2
    # ...and state of its own after the fork.
    assert second["state"] == ["a"]
    assert third["state"] == []
    assert (await _answer(running, "second", {"append": "b"}))["state"] == ["a", "b"]
    assert (await _answer(running, "third", {}))["state"] == []

    status, listed = await running.admin("GET", "/v1/environments/trusted")
    assert status == 200
    (shown,) = listed["environments"]
    assert shown["hash"] == env_hash
    assert shown["state"] == "ready"
    assert shown["pid"] == zygote.pid
    assert shown["pss_bytes"] > 0
    assert "requests" in shown["requirements"]
    assert shown["lock"] == trusted["lock"]
    # Charged against the node's caps like an instance (its PSS).
    count, memory = running.platform.scheduler.room.usage()
    # (and its spare fork, walled in already, for the next cold start)
    spares = int(known.spare is not None)
    assert _zygotes(running).usage() == (1 + spares, known.memory_bytes + spares * SPARE_BYTES)
    assert count >= 1 + 3
    assert memory >= known.memory_bytes

    # Untrusted: it forks no more (a new function imports requests itself), and exits once
    # the instances it forked have.
    status, _ = await running.admin("DELETE", f"/v1/environments/{env_hash}/trust")
    assert status == 200
    await running.deploy_ok("fourth", _handler("requests"), requirements=REQUESTS)
    assert (await _answer(running, "fourth", {}))["preloaded"] is False
    assert zygote.is_running()
    # Still charged while it lives on (for its instances), without a spare.
    assert _zygotes(running).usage() == (1, known.memory_bytes)
    for name in ("second", "third"):
        status, _ = await running.admin("DELETE", f"/v1/functions/{name}")
        assert status == 200
    await asyncio.to_thread(zygote.wait, 15)
    assert not zygote.is_running()
    status, listed = await running.admin("GET", "/v1/environments/trusted")
    assert listed["environments"] == []
    assert _zygotes(running).usage() == (0, 0)


async def test_only_the_admin_trusts_an_environment(running: Running) -> None:
    deployed = await running.deploy_ok("uses-six", _handler("six"), requirements=SIX)
    env_hash = deployed["environment"]
    for role in ("deployer", "reader"):
        status, created = await running.admin("POST", "/v1/keys", json={"role": role})
        assert status == 201, created
        headers = {"Authorization": f"Bearer {created['key']}"}
        for method, path in (
            ("PUT", f"/v1/environments/{env_hash}/trust"),
            ("DELETE", f"/v1/environments/{env_hash}/trust"),
            ("GET", "/v1/environments/trusted"),
        ):
            status, refused = await running.admin(method, path, headers=headers, json={})
            assert status == 403, (role, method, refused)
            assert refused["error"]["code"] == "forbidden"
    assert _zygotes(running).trusted == {}
    status, listed = await running.admin("GET", "/v1/environments/trusted")
    assert listed["environments"] == []
    # Unknown or malformed environments are named as such.
    status, error = await running.admin("PUT", f"/v1/environments/{'0' * 64}/trust", json={})
    assert status == 404
    assert error["error"]["code"] == "not_found"
    status, error = await running.admin("PUT", "/v1/environments/nope/trust", json={})
    assert status == 400
    assert error["error"]["code"] == "bad_environment"
    status, error = await running.admin(
        "PUT", f"/v1/environments/{env_hash}/trust", json={"modules": ["os; rm"]}
    )
    assert status == 400
    assert error["error"]["code"] == "bad_modules"


async def test_an_untrusted_environment_keeps_todays_path(running: Running) -> None:
    """Another environment is trusted: this one's instances still import their packages in a
    generic instance of the runtime zygote, and no zygote is made for it."""
    trusted = await running.deploy_ok("trusted", _handler("requests"), requirements=REQUESTS)
    status, _ = await running.admin(
        "PUT", f"/v1/environments/{trusted['environment']}/trust", json={"modules": ["requests"]}
    )
    assert status == 200
    await _ready(running, trusted["environment"])
    plain = await running.deploy_ok("plain", _handler("six"), requirements=SIX)
    answer = await _answer(running, "plain", {})
    assert answer["preloaded"] is False
    assert answer["seccomp"] == "2"
    assert set(_zygotes(running).trusted) == {trusted["environment"]}
    (pid,) = await _host_pids(running, "plain")
    backend = running.platform.scheduler.backend
    assert isinstance(backend, LocalBackend)
    assert psutil.Process(pid).ppid() == backend.zygote_pid
    assert plain["environment"] != trusted["environment"]


async def test_a_trusted_environment_is_made_again_after_a_restart_when_first_needed(
    make_platform: Any,
) -> None:
    async with make_platform() as running:
        deployed = await running.deploy_ok("before", _handler("requests"), requirements=REQUESTS)
        env_hash = deployed["environment"]
        status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
        assert status == 200
    async with make_platform() as running:
        known = _zygotes(running).trusted[env_hash]
        assert not known.ready
        assert known.making is None
        await running.deploy_ok("after", _handler("requests"), requirements=REQUESTS)
        known = await _ready(running, env_hash)  # the deploy asked for it
        await running.deploy_ok("later", _handler("requests"), requirements=REQUESTS)
        assert (await _answer(running, "later", {}))["preloaded"] is True


async def test_the_bound_retires_the_least_recently_used_zygote(make_platform: Any) -> None:
    async with make_platform(env_zygotes=1) as running:
        six = (await running.deploy_ok("six", _handler("six"), requirements=SIX))["environment"]
        req = (await running.deploy_ok("req", _handler("requests"), requirements=REQUESTS))[
            "environment"
        ]
        status, _ = await running.admin("PUT", f"/v1/environments/{six}/trust", json={})
        assert status == 200
        first = await _ready(running, six)
        assert first.zygote is not None
        retired = psutil.Process(first.zygote.process.pid)
        status, _ = await running.admin("PUT", f"/v1/environments/{req}/trust", json={})
        assert status == 200
        await _ready(running, req)
        # One zygote at most: the other environment's is retired (its spare with it), and
        # exits, since no instance of it runs; it stays trusted, made again when needed.
        await asyncio.to_thread(retired.wait, 15)
        zygotes = _zygotes(running)
        assert not zygotes.trusted[six].ready
        assert sum(k.ready for k in zygotes.trusted.values()) == 1
        await running.deploy_ok("six-again", _handler("six"), requirements=SIX)
        assert (await _answer(running, "six-again", {}))["preloaded"] is False  # (made now)
        await _ready(running, six)
        assert not zygotes.trusted[req].ready


async def test_every_gateway_follows_a_trust_made_on_another(make_platform: Any) -> None:
    """Trusting or untrusting on one gateway reaches the others by a Postgres notification,
    as a key's revocation does: none waits for its next start."""
    async with make_platform() as a, make_platform() as b:
        env_hash = (await a.deploy_ok("on-a", _handler("six"), requirements=SIX))["environment"]
        follows = _zygotes(b).follows
        status, _ = await a.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
        assert status == 200
        await _zygotes(b).wait_followed(follows, timeout_s=10)  # the NOTIFY reached b
        assert env_hash in _zygotes(b).trusted
        await b.deploy_ok("on-b", _handler("six"), requirements=SIX)  # (asks for its zygote)
        await _ready(b, env_hash)
        await b.deploy_ok("later-on-b", _handler("six"), requirements=SIX)
        assert (await _answer(b, "later-on-b", {}))["preloaded"] is True

        follows = _zygotes(a).follows
        status, _ = await b.admin("DELETE", f"/v1/environments/{env_hash}/trust")
        assert status == 200
        await _zygotes(a).wait_followed(follows, timeout_s=10)
        assert env_hash not in _zygotes(a).trusted
        await a.deploy_ok("after-on-a", _handler("six"), requirements=SIX)
        assert (await _answer(a, "after-on-a", {}))["preloaded"] is False
        status, listed = await a.admin("GET", "/v1/environments/trusted")
        assert listed["environments"] == []


async def test_a_hung_zygote_is_retired_and_cold_starts_fork_from_the_runtimes(
    running: Running,
) -> None:
    """An environment's zygote that stops answering (stopped here; a deadlocked at-fork hook
    would do the same) holds up no cold start: the fork falls back to the runtime's zygote
    within the start timeout, and the hung zygote is retired (made again when next needed)."""
    env_hash = (await running.deploy_ok("first", _handler("six"), requirements=SIX))["environment"]
    status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200
    known = await _ready(running, env_hash)
    assert known.zygote is not None
    hung = psutil.Process(known.zygote.process.pid)
    zygotes = _zygotes(running)
    zygotes.fork_timeout_s = 1.0
    _drop_spare(zygotes, known)
    hung.suspend()
    try:
        await running.deploy_ok("second", _handler("six"), requirements=SIX)
        answer = await _answer(running, "second", {})
        assert answer["preloaded"] is False  # (imported six itself, in a generic instance)
        assert answer["seccomp"] == "2"
        assert not known.ready
        assert known.failure is not None
        assert "did not fork within 1s" in known.failure
        (pid,) = await _host_pids(running, "second")
        backend = running.platform.scheduler.backend
        assert isinstance(backend, LocalBackend)
        assert psutil.Process(pid).ppid() == backend.zygote_pid
    finally:
        hung.resume()
    await asyncio.to_thread(hung.wait, 15)  # retired: it exits once it reads that
    await running.deploy_ok("third", _handler("six"), requirements=SIX)
    assert known.making is None  # (not made again at once: it may hang again)
    status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200  # (the operator asks: made at once)
    await _ready(running, env_hash)
    await running.deploy_ok("fourth", _handler("six"), requirements=SIX)
    assert (await _answer(running, "fourth", {}))["preloaded"] is True


def _drop_spare(zygotes: EnvZygotes, known: EnvZygote) -> None:
    """No spare fork: the next cold start asks the zygote for one."""
    zygotes._drop_spare(known)


async def test_a_functions_own_module_wins_over_a_package_its_zygote_imported(
    running: Running, tmp_path: Path
) -> None:
    """A function with a `helpers.py` of its own, in an environment with a package `helpers`:
    it imports its own, trusted or not (its directory comes first on sys.path)."""
    requirements = "helpers-dist==1.0\n"
    env_hash = await store_environment(
        running.platform.store,
        tmp_path,
        requirements,
        {"helpers/__init__.py": "WHOSE = 'environment'\n"},
    )
    handler = "import helpers\n\ndef handler(event, context):\n    return helpers.WHOSE\n"
    files = io.BytesIO()
    with zipfile.ZipFile(files, "w") as archive:
        archive.writestr("handler.py", handler)
        archive.writestr("helpers.py", "WHOSE = 'function'\n")
    code = base64.b64encode(files.getvalue()).decode()
    deployed = await running.deploy_ok("before", handler, archive=code, requirements=requirements)
    assert deployed["environment"] == env_hash
    status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200
    known = await _ready(running, env_hash)
    assert known.imported == ["helpers"]
    await running.deploy_ok("after", handler, archive=code, requirements=requirements)
    for name in ("before", "after"):
        response = await running.call(name, {})
        assert response.status == 200, await response.text()
        assert await response.text() == "function"
    (pid,) = await _host_pids(running, "after")
    assert known.zygote is not None
    assert psutil.Process(pid).ppid() == known.zygote.process.pid  # (forked from it)


async def test_a_package_that_maps_shared_memory_gets_no_zygote(
    running: Running, tmp_path: Path
) -> None:
    """A package that maps shared memory at import (mmap.mmap(-1, n) leaves no descriptor)
    would give every fork of its zygote, of every function, one memory: a channel between
    functions that no wall closes. Its environment is refused a zygote: each function's
    instance maps its own."""
    requirements = "board-dist==1.0\n"
    board = "import mmap\nBOARD = mmap.mmap(-1, 4096)\n"
    env_hash = await store_environment(
        running.platform.store, tmp_path, requirements, {"board.py": board}
    )
    handler = textwrap.dedent("""
        import board

        def handler(event, context):
            if "write" in event:
                board.BOARD[:32] = event["write"].encode().ljust(32, b"\\0")
            return board.BOARD[:32].rstrip(b"\\0").decode()
    """)
    await running.deploy_ok("first", handler, requirements=requirements)
    status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200
    known = _zygotes(running).trusted[env_hash]
    if known.making is not None:
        await asyncio.wait_for(asyncio.shield(known.making), 30)
    assert not known.ready
    assert known.failure is not None
    assert "writable shared memory" in known.failure
    await running.deploy_ok("writer", handler, requirements=requirements)
    await running.deploy_ok("reader", handler, requirements=requirements)
    response = await running.call("writer", {"write": "writer's secret"})
    assert await response.text() == "writer's secret"
    response = await running.call("reader", {})
    assert response.status == 200
    assert await response.text() == ""  # (its own memory)


async def test_a_refused_environment_is_not_imported_again_at_each_cold_start(
    running: Running, tmp_path: Path
) -> None:
    """Its imports fail the same way each time (here: a thread), and each try imports its
    packages again as root: after a failure the next try waits (30 s, doubled each time), so
    a deployer's cold starts cannot make the platform import it again and again. The operator
    trusting it again tries at once."""
    requirements = "spinner-dist==1.0\n"
    spinner = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True, name='pool').start()\n"
    )
    env_hash = await store_environment(
        running.platform.store, tmp_path, requirements, {"spinner.py": spinner}
    )
    status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200
    known = _zygotes(running).trusted[env_hash]
    if known.making is not None:
        await asyncio.wait_for(asyncio.shield(known.making), 30)
    assert known.failure is not None
    assert "started 1 thread(s) (pool)" in known.failure
    assert known.attempts == 1
    handler = "import spinner\n\ndef handler(event, context):\n    return 'ok'\n"
    for name in ("one", "two", "three"):
        await running.deploy_ok(name, handler, requirements=requirements)
        response = await running.call(name, {})
        assert await response.text() == "ok"
    assert known.making is None
    assert known.attempts == 1
    status, listed = await running.admin("GET", "/v1/environments/trusted")
    assert listed["environments"][0]["attempts"] == 1
    status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200
    assert known.attempts == 2
    if known.making is not None:
        await asyncio.wait_for(asyncio.shield(known.making), 30)


async def test_trusting_again_with_other_modules_while_it_is_made(
    running: Running, tmp_path: Path
) -> None:
    """The operator names other modules while the zygote is being made (its imports under
    way): that making is given up, and the new one is made beside it (same environment, a
    socket of its own)."""
    started, release = tmp_path / "started", tmp_path / "release"
    os.mkfifo(started)
    os.mkfifo(release)
    slow = f"open({str(started)!r}, 'w').write('x')\nopen({str(release)!r}).read()\n"
    requirements = "slow-dist==1.0\n"
    env_hash = await store_environment(
        running.platform.store, tmp_path, requirements, {"slow.py": slow, "fast.py": "X = 1\n"}
    )
    status, _ = await running.admin(
        "PUT", f"/v1/environments/{env_hash}/trust", json={"modules": ["slow"]}
    )
    assert status == 200
    await asyncio.wait_for(asyncio.to_thread(started.read_text), 30)  # (importing slow now)
    try:
        status, _ = await running.admin(
            "PUT", f"/v1/environments/{env_hash}/trust", json={"modules": ["fast"]}
        )
        assert status == 200
        known = await _ready(running, env_hash)
        assert known.imported == ["fast"]
    finally:
        await asyncio.to_thread(release.write_text, "go")  # (the first one ends)


async def test_a_zygote_made_again_after_a_crash_keeps_a_spare_again(running: Running) -> None:
    """Its zygote was killed (its spare died with it): the new one, made when next needed,
    keeps a live spare again; the dead one is not kept, nor charged."""
    env_hash = (await running.deploy_ok("six", _handler("six"), requirements=SIX))["environment"]
    status, _ = await running.admin("PUT", f"/v1/environments/{env_hash}/trust", json={})
    assert status == 200
    known = await _ready(running, env_hash)
    if known.refilling is not None:
        await asyncio.wait_for(asyncio.shield(known.refilling), 10)
    assert known.zygote is not None
    assert known.spare is not None
    crashed = psutil.Process(known.zygote.process.pid)
    crashed.kill()
    await asyncio.to_thread(crashed.wait, 10)
    await asyncio.wait_for(known.spare.wait(), 10)  # (it dies with its zygote)
    await running.deploy_ok("again", _handler("six"), requirements=SIX)  # (asks for a new one)
    await _ready(running, env_hash)
    if known.refilling is not None:
        await asyncio.wait_for(asyncio.shield(known.refilling), 10)
    assert known.spare is not None
    assert not known.spare.exited.done()
