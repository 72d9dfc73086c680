"""Shared fixtures: a real Postgres (DATABASE_URL, else an embedded one; tests marked
`both_postgres` also on EMBER_TEST_EXTERNAL_DATABASE_URL) with a fresh database per test, and a
running platform on a real socket with real invoker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest
import uvloop
from aiohttp import web

from gateway.app import build_app, build_dashboard_app
from gateway.connections import GatewayRunner
from gateway.platform import Platform
from gateway.settings import Settings
from scheduler.backends.isolation import IsolationSettings
from scheduler.backends.local import LocalBackend
from scheduler.scheduler import PoolSettings
from store.embedded import start_embedded_postgres, with_database

TOKEN = "test-token"
ROOT = Path(__file__).resolve().parents[1]


def pytest_asyncio_loop_factories(
    config: pytest.Config,
    item: pytest.Item,
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, as the platform does."""
    return {"uvloop": uvloop.new_event_loop}


EXTERNAL_DATABASE_URL = os.environ.get("EMBER_TEST_EXTERNAL_DATABASE_URL") or None
"""A second Postgres server (another major version: the machine's own, in CI), set by .ci/run
when one answers. Tests marked `both_postgres` run against it as well as the usual server."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        EXTERNAL_DATABASE_URL
        and "pg_server_url" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("both_postgres")
    ):
        metafunc.parametrize("pg_server_url", ["usual", "external"], indirect=True)


@pytest.fixture(scope="session")
def usual_pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Postgres server for the session: DATABASE_URL when set, else an embedded one."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    embedded = start_embedded_postgres(tmp_path_factory.mktemp("pg") / "data")
    _DROP_AS[embedded.url] = embedded.superuser_url
    yield embedded.url
    embedded.stop()


_DROP_AS: dict[str, str] = {}
"""Test databases are dropped as the embedded server's superuser: only it may end the
autovacuum worker that a DROP ... WITH (FORCE) can meet after a test wrote much."""


@pytest.fixture(scope="session")
def external_pg_server_url() -> str:
    """EMBER_TEST_EXTERNAL_DATABASE_URL, checked once: set means it must answer."""
    assert EXTERNAL_DATABASE_URL is not None

    async def version() -> str:
        conn = await asyncpg.connect(EXTERNAL_DATABASE_URL, timeout=10)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        server_version = asyncio.run(version())
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"EMBER_TEST_EXTERNAL_DATABASE_URL is set but does not answer: {exc}")
    assert int(server_version.split(".")[0]) >= 13, f"Ember needs Postgres 13+: {server_version}"
    return EXTERNAL_DATABASE_URL


@pytest.fixture
def pg_server_url(request: pytest.FixtureRequest) -> str:
    """The server a test's database is created on: the usual one, or (tests marked
    `both_postgres`, a second time) the external one. The servers themselves live for the
    session."""
    which = getattr(request, "param", "usual")
    return str(request.getfixturevalue(f"{which}_pg_server_url"))


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    name = f"ember_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(pg_server_url, name)
    admin = await asyncpg.connect(_DROP_AS.get(pg_server_url, pg_server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def platform_processes(platform: Platform) -> list[psutil.Process]:
    """The zygote of a platform and every instance it forked (to check nothing leaks)."""
    backend = platform.scheduler.backend
    if not isinstance(backend, LocalBackend) or backend.zygote_pid is None:
        return []
    try:
        zygote = psutil.Process(backend.zygote_pid)
        return [zygote, *zygote.children()]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Running:
    """A platform serving on a real port, with an HTTP session to call it."""

    platform: Platform
    url: str
    http: aiohttp.ClientSession
    dashboard_url: str = ""
    """The dashboard's origin (its own port): `{dashboard_url}/ui`."""
    admin_headers: dict[str, str] = field(
        default_factory=lambda: {"Authorization": f"Bearer {TOKEN}"}
    )

    async def deploy(self, name: str, source: str | None, **config: Any) -> aiohttp.ClientResponse:
        body = {"name": name, "source": source, "filename": "handler.py", **config}
        return await self.http.post(
            f"{self.url}/v1/functions", json=body, headers=self.admin_headers
        )

    async def deploy_ok(self, name: str, source: str, **config: Any) -> dict[str, Any]:
        response = await self.deploy(name, source, **config)
        data: dict[str, Any] = await response.json()
        assert response.status == 201, data
        return data

    async def call(self, target: str, payload: Any = None, **kwargs: Any) -> aiohttp.ClientResponse:
        if payload is not None:
            kwargs["json"] = payload
        return await self.http.post(f"{self.url}/fn/{target}", **kwargs)

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.admin_headers, **kwargs.pop("headers", {})}
        async with self.http.request(
            method, f"{self.url}{path}", headers=headers, **kwargs
        ) as response:
            return response.status, await response.json()


PlatformFactory = Callable[..., AbstractAsyncContextManager[Running]]


def _task_dump_after(seconds: float) -> threading.Timer:
    """If the test is still running after `seconds`, print every asyncio task's stack to the
    real stderr: what a hung test is waiting for (before the test timeout kills the run)."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        print(f"\n--- asyncio tasks after {seconds:g}s ---", file=sys.__stderr__)
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.__stderr__)

    timer = threading.Timer(seconds, lambda: loop.call_soon_threadsafe(dump))
    timer.daemon = True
    timer.start()
    return timer


def shared(tmp_path: Path) -> Path:
    """A directory handlers may write to (exposed to instances, as FN_EXPOSE does): how a
    test sees what a handler did. Anything else of the host is out of a handler's reach."""
    path = tmp_path / "shared"
    path.mkdir(exist_ok=True)
    path.chmod(0o777)  # the instances run as uids of their own
    return path


def exposing(tmp_path: Path) -> IsolationSettings:
    return IsolationSettings(expose=(str(shared(tmp_path)),))


@pytest.fixture
def make_platform(database_url: str, tmp_path: Path) -> PlatformFactory:
    """Start a platform with the given settings / pool settings overrides. Platforms running
    at once get state dirs of their own (one platform per state dir)."""
    running: list[Path] = []

    @asynccontextmanager
    async def start(
        *, pool: dict[str, Any] | None = None, **overrides: Any
    ) -> AsyncIterator[Running]:
        pool_settings = replace(PoolSettings(generic_pool_size=1, stop_grace_s=1.0), **(pool or {}))
        overrides.setdefault("isolation", exposing(tmp_path))
        state_dir = next(
            d
            for n in range(100)
            if (d := tmp_path / ("state" if n == 0 else f"state-{n}")) not in running
        )
        settings = Settings(
            host="127.0.0.1",
            port=0,
            state_dir=state_dir,
            database_url=database_url,
            token=TOKEN,
            pool=pool_settings,
            **overrides,
        )
        platform = await Platform.start(settings)
        running.append(state_dir)
        watchdog = _task_dump_after(45.0)
        runner = GatewayRunner(build_app(platform), settings.http, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        platform.served["calls"] = port
        dashboard = GatewayRunner(
            build_dashboard_app(platform), settings.dashboard_http(), shutdown_timeout=2
        )
        await dashboard.setup()
        await web.TCPSite(dashboard, "127.0.0.1", 0).start()
        platform.served["dashboard"] = dashboard.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as http:
                yield Running(
                    platform,
                    f"http://{host}:{port}",
                    http,
                    dashboard_url=f"http://{host}:{platform.served['dashboard']}",
                )
        finally:
            watchdog.cancel()  # (also when the test failed: it would fire in a later one)
            processes = platform_processes(platform)
            platform.stopping.set()
            await dashboard.cleanup()
            await runner.cleanup()
            await platform.stop()
            running.remove(state_dir)
        _, leaked = psutil.wait_procs(processes, timeout=5)
        leaked = [p for p in leaked if p.status() != psutil.STATUS_ZOMBIE]
        assert not leaked, f"invoker processes left running: {leaked}"

    return start


@pytest.fixture
async def running(make_platform: PlatformFactory) -> AsyncIterator[Running]:
    async with make_platform() as r:
        yield r


@dataclass
class FnUp:
    """`fn up` as a subprocess (what a user runs), with the lines it wrote on stderr."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    stderr: list[bytes]


@contextmanager
def fn_up_process(state_dir: Path, **env_vars: str) -> Iterator[FnUp]:
    """Run `fn up` on a free port with its state in `state_dir`; stop it by PID afterwards,
    and fail if it exits badly or leaves a process behind."""
    fn = str(Path(sys.executable).parent / "fn")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FN_") and k != "DATABASE_URL"}
    env.update(FN_STATE_DIR=str(state_dir), **env_vars)
    process = subprocess.Popen([fn, "up", "--port", "0"], env=env, cwd=ROOT, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr
    lines: list[bytes] = []
    for line in stderr:  # until it says it is up (or exits)
        lines.append(line)
        if line.startswith(b"Ember is up"):
            break
    else:
        stderr.close()
        pytest.fail(f"fn up exited with {process.wait()}: {b''.join(lines).decode()}")
    drain = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
    drain.start()
    try:
        yield FnUp(process, env, lines)
    finally:
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        drain.join(timeout=5)
        stderr.close()
        assert code == 0, b"".join(lines).decode()[-3000:]
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"processes outlived fn up: {alive}"
