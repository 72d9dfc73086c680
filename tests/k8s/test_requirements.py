"""Functions with requirements on the Kubernetes backend, end to end: a gateway that builds the
environment, the scheduler process, invoker pods (processes of the fake kubelet) that fetch it
through a node environment cache (`python -m gateway.envcache`) with a token scoped to it.

The requirement is a wheel made here and served on loopback (`embertiny @ http://...`), so
pip needs no package index."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import signal
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from builds.archives import Archives
from gateway.env_tokens import EnvTokens
from tests.conftest import TOKEN, PlatformFactory, Running
from tests.k8s import test_platform
from tests.k8s.fakeapi import FakeKubernetes
from tests.k8s.test_platform import SCHEDULER_TOKEN, SchedulerFactory, free_port

pytestmark = pytest.mark.timeout(180)
start_scheduler = test_platform.start_scheduler  # the fixture, shared

USES_TINY = """\
import os
import embertiny

def handler(event, context):
    return {"tiny": embertiny.VERSION, "file": embertiny.__file__, "environ": dict(os.environ)}
"""


def wheel(name: str = "embertiny", version: str = "1.0") -> bytes:
    """A pure-Python wheel, as pip expects it (METADATA, WHEEL, a RECORD of hashes)."""
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: ember-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return buffer.getvalue()


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def requirement() -> AsyncIterator[str]:
    """A requirements line for embertiny, a wheel served on loopback."""
    data = wheel()

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/embertiny-1.0-py3-none-any.whl", get)
    async with serving(app) as url:
        yield f"embertiny @ {url}/embertiny-1.0-py3-none-any.whl\n"


class EnvCacheProcess:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as response:
            data: dict[str, Any] = await response.json()
            return data


CacheFactory = Callable[[str, int], AbstractAsyncContextManager[EnvCacheProcess]]


@pytest.fixture
def start_envcache(tmp_path: Path) -> CacheFactory:
    @asynccontextmanager
    async def start(upstream: str, port: int) -> AsyncIterator[EnvCacheProcess]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.getcwd(),
            "EMBER_ENV_UPSTREAM": upstream,
            "EMBER_ENVCACHE_PORT": str(port),
            "EMBER_ENVCACHE_DIR": str(tmp_path / f"envcache-{port}"),
        }
        with open(tmp_path / f"envcache-{port}.log", "wb") as log:  # noqa: ASYNC230
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.envcache", env=env, stderr=log
            )
        cache = EnvCacheProcess(process, f"http://127.0.0.1:{port}")
        try:
            async with asyncio.timeout(20):
                while True:
                    try:
                        await cache.stats()
                        break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)  # (a process start: nothing to await)
            yield cache
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()

    return start


@asynccontextmanager
async def cluster(
    start_scheduler: SchedulerFactory,
    make_platform: PlatformFactory,
    gateway_id: str,
    env_url: str,
) -> AsyncIterator[Running]:
    async with start_scheduler() as scheduler:
        await scheduler.wait_health("leader")
        async with make_platform(
            backend="kubernetes",
            scheduler_token=SCHEDULER_TOKEN,
            gateway_id=gateway_id,
            pool={"generic_pool_size": 0},
            env_url=env_url,
        ) as r:
            yield r


async def test_functions_with_requirements_run_in_pods_and_share_the_node_cache(
    fake: FakeKubernetes,
    start_scheduler: SchedulerFactory,
    make_platform: PlatformFactory,
    start_envcache: CacheFactory,
    requirement: str,
) -> None:
    port = free_port()
    async with (
        cluster(start_scheduler, make_platform, "gw-req", f"http://127.0.0.1:{port}") as r,
        start_envcache(r.url, port) as cache,
    ):
        first = await r.deploy_ok("tiny-a", USES_TINY, requirements=requirement)
        env_hash = first["environment"]
        response = await r.call("tiny-a", {})
        assert response.status == 200, await response.text()
        data = await response.json()
        assert data["tiny"] == "1.0"
        # Imported from the pod's own environments directory (its emptyDir), not the gateway's.
        assert f"/{env_hash}/embertiny/" in data["file"]
        assert str(r.platform.settings.state_dir) not in data["file"]
        # The pod holds no credential: no database URL, no admin or scheduler token, and the
        # environment token is not among its variables either.
        environ: dict[str, str] = data["environ"]
        assert not {"DATABASE_URL", "FN_TOKEN", "FN_SCHEDULER_TOKEN"} & set(environ)
        assert not [v for v in environ.values() if v.startswith("v1.") or TOKEN in v]
        assert (await cache.stats())["misses"] == 1

        # Another function, the same requirements, another pod on the node: the node's copy.
        second = await r.deploy_ok("tiny-b", USES_TINY, requirements=requirement)
        assert second["environment"] == env_hash
        response = await r.call("tiny-b", {})
        assert response.status == 200, await response.text()
        stats = await cache.stats()
        assert (stats["misses"], stats["environments"]) == (1, 1)
        assert stats["hits"] >= 1


async def test_the_archive_needs_a_token_for_that_environment(
    fake: FakeKubernetes,
    start_scheduler: SchedulerFactory,
    make_platform: PlatformFactory,
    start_envcache: CacheFactory,
    requirement: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    async with (
        cluster(start_scheduler, make_platform, "gw-tok", f"http://127.0.0.1:{port}") as r,
        start_envcache(r.url, port) as cache,
    ):
        env_hash = (await r.deploy_ok("tiny", USES_TINY, requirements=requirement))["environment"]
        tokens = r.platform.env_tokens
        expired = EnvTokens(TOKEN, ttl_s=-30).issue(env_hash)
        refusals = [
            (None, 401, "unauthorized"),
            ("Bearer not-a-token", 401, "unauthorized"),
            (f"Bearer {TOKEN}", 401, "unauthorized"),  # the admin token is not one
            (f"Bearer {EnvTokens('another-admin-token').issue(env_hash)}", 401, "unauthorized"),
            (f"Bearer {expired}", 401, "token_expired"),
            (f"Bearer {tokens.issue('0' * 64)}", 403, "forbidden"),
        ]
        for base in (r.url, cache.url):  # the gateway, and the cache that asks it
            for header, status, code in refusals:
                headers = {"Authorization": header} if header else {}
                async with r.http.get(
                    f"{base}/environments/{env_hash}", headers=headers
                ) as response:
                    body = await response.json()
                    assert (response.status, body["error"]["code"]) == (status, code), header
                    assert body["error"]["message"]
                    if status == 401:
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
            headers = {"Authorization": f"Bearer {tokens.issue(env_hash)}"}
            async with r.http.get(f"{base}/environments/{env_hash}", headers=headers) as response:
                assert response.status == 200
                data = await response.read()
                assert hashlib.sha256(data).hexdigest() == response.headers["X-Ember-Sha256"]
        assert (await cache.stats())["refused"] == len(refusals)
        # Another gateway replica, which has no copy, writes it from the database's chunks:
        # the same bytes, the same sha256.
        kept = await r.platform.builder.archives.get(env_hash)
        again = await Archives(r.platform.store, tmp_path / "other-gateway").get(env_hash)
        assert (again.sha256, again.size_bytes) == (kept.sha256, kept.size_bytes)
        assert again.path.read_bytes() == kept.path.read_bytes()


async def test_a_tampered_archive_is_refused_before_the_function_is_imported(
    fake: FakeKubernetes,
    start_scheduler: SchedulerFactory,
    make_platform: PlatformFactory,
    requirement: str,
    tmp_path: Path,
) -> None:
    """Between the gateway and the pod, one byte of the archive changes (a node cache's disk,
    a proxy): the pod refuses it, and the function's module never runs."""
    upstream: list[str] = []

    async def tamper(request: web.Request) -> web.Response:
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.get(f"{upstream[0]}{request.path}", headers=headers) as response,
        ):
            data = bytearray(await response.read())
            if response.status == 200:
                data[len(data) // 2] ^= 0xFF
            return web.Response(status=response.status, body=bytes(data))

    app = web.Application()
    app.router.add_get("/environments/{hash}", tamper)
    marker = tmp_path / "imported"
    source = f"open({str(marker)!r}, 'w').close()\n" + USES_TINY
    async with (
        serving(app) as proxy,
        cluster(start_scheduler, make_platform, "gw-tamper", proxy) as r,
    ):
        upstream.append(r.url)
        response = await r.deploy("tiny", source, requirements=requirement)
        body = await response.json()
        assert response.status >= 400, body
        message = body["error"]["message"]
        assert "EnvironmentRefused" in message, message
        assert "does not match the sha256" in message, message
        assert not marker.exists()  # (the module's first line would have made it)
