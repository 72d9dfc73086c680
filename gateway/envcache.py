"""The node's environment cache: `python -m gateway.envcache`, one per node (a DaemonSet).

Invoker pods fetch the environments of functions with requirements here: the gateway's
EMBER_ENV_URL names this cache's Service, whose `internalTrafficPolicy: Local` sends each pod
to the cache on its own node. The first pod of a node that needs an environment makes the cache
download the archive from a gateway (EMBER_ENV_UPSTREAM), once however many pods ask at the
same time; it is kept in an emptyDir, checked against the sha256 the gateway sent with it. Later
pods on the node get the node's copy.

The cache holds no secret (no token of its own, no database): every request, hit or miss, goes
to a gateway with the pod's own token, and a hit asks with `If-None-Match: "<sha256>"`, so the
gateway checks the token and answers 304 without the bytes. A refusal (401, 403, 404) is passed
on as the gateway said it. The pod checks the sha256 itself too, so a cache that lies is caught.

Kept up to EMBER_ENVCACHE_MAX bytes; the least recently used archives are dropped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from config.env import Env
from config.units import ConfigError
from gateway.errors import error_response, json_response

log = logging.getLogger("ember.envcache")

SHA256_HEADER = "X-Ember-Sha256"
CACHE_HEADER = "X-Ember-Cache"
_HASH = re.compile(r"[0-9a-f]{64}")
_PASSED_ON = ("WWW-Authenticate", "Retry-After")


@dataclass(slots=True, frozen=True, kw_only=True)
class CacheSettings:
    upstream: str
    """A gateway's URL (EMBER_ENV_UPSTREAM; deploy/: the gateway Service)."""
    directory: Path = Path("/var/cache/ember")
    """Where the archives are kept (EMBER_ENVCACHE_DIR; an emptyDir)."""
    host: str = "127.0.0.1"
    """Address to listen on (EMBER_ENVCACHE_HOST)."""
    port: int = 8083
    """Port to listen on (EMBER_ENVCACHE_PORT)."""
    max_bytes: int = 4 << 30
    """Archives kept at most (EMBER_ENVCACHE_MAX, default 4Gi); give the emptyDir a bit more."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> CacheSettings:
        read, d = Env(env), cls(upstream="")
        upstream = read.text("EMBER_ENV_UPSTREAM").rstrip("/")
        if not upstream.startswith(("http://", "https://")):
            raise ConfigError("EMBER_ENV_UPSTREAM", upstream, "a gateway's http(s) URL")
        return cls(
            upstream=upstream,
            directory=Path(read.text("EMBER_ENVCACHE_DIR", str(d.directory))),
            host=read.text("EMBER_ENVCACHE_HOST", d.host),
            port=read.at_least("EMBER_ENVCACHE_PORT", d.port),
            max_bytes=read.size_bytes("EMBER_ENVCACHE_MAX", d.max_bytes, minimum=1 << 20),
        )


@dataclass(slots=True)
class Entry:
    path: Path
    sha256: str
    size_bytes: int
    used: float = field(default_factory=time.monotonic)


class EnvCache:
    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self.entries: dict[str, Entry] = {}
        self.hits = self.misses = self.refused = 0
        self._fetching: dict[str, asyncio.Future[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def session_context(self, app: web.Application) -> AsyncIterator[None]:
        self.settings.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(self._load)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            self._session = session
            yield

    def _load(self) -> None:
        """What an earlier run of this container left in the emptyDir (its sha256 computed
        again: the gateway's 304 is then the proof that it is still the right archive)."""
        for path in self.settings.directory.iterdir():
            name = path.name.removesuffix(".tar.gz")
            if _HASH.fullmatch(name) and path.is_file():
                self.entries[name] = Entry(path, _sha256_of(path), path.stat().st_size)
            elif path.name.startswith(".fetch-"):
                path.unlink(missing_ok=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        env_hash = request.match_info["hash"]
        if not _HASH.fullmatch(env_hash):
            return error_response(404, "not_found", "no environment has that name (a sha256)")
        while (fetching := self._fetching.get(env_hash)) is not None:
            await asyncio.wait([fetching])  # another pod's download: then ours is a hit
        have = self.entries.get(env_hash)
        headers = {"Authorization": request.headers.get("Authorization", "")}
        if have is not None:
            headers["If-None-Match"] = f'"{have.sha256}"'
        mine = None
        if have is None:
            mine = self._fetching[env_hash] = asyncio.get_running_loop().create_future()
        assert self._session is not None
        url = f"{self.settings.upstream}/environments/{env_hash}"
        try:
            async with self._session.get(url, headers=headers) as upstream:
                sha256 = upstream.headers.get(SHA256_HEADER, "")
                if upstream.status == 304 and have is not None and sha256 == have.sha256:
                    self.hits += 1
                    have.used = time.monotonic()
                    return _serve(have, "hit")
                if upstream.status != 200:
                    return await self._pass_on(upstream)
                entry = await self._keep(env_hash, upstream, sha256)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "cannot fetch an environment", extra={"env": env_hash[:12], "err": str(exc)}
            )
            return error_response(
                502, "upstream_failed", f"the environment cache cannot reach {url}: {exc}"
            )
        finally:
            if mine is not None:
                self._fetching.pop(env_hash, None)
                mine.set_result(None)
        self.misses += 1
        return _serve(entry, "miss")

    async def _pass_on(self, upstream: aiohttp.ClientResponse) -> web.Response:
        if upstream.status in (401, 403):
            self.refused += 1
        body = await upstream.content.read(64 << 10)
        headers = {k: upstream.headers[k] for k in _PASSED_ON if k in upstream.headers}
        return web.Response(
            status=upstream.status,
            body=body,
            headers=headers,
            content_type=upstream.content_type,
        )

    async def _keep(self, env_hash: str, upstream: aiohttp.ClientResponse, sha256: str) -> Entry:
        """Write the archive the gateway sends; kept only if it matches the sha256 it sent."""
        fd, name = tempfile.mkstemp(prefix=".fetch-", dir=self.settings.directory)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in upstream.content.iter_chunked(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(f.write, chunk)
            if digest.hexdigest() != sha256:
                raise aiohttp.ClientPayloadError(
                    f"the archive does not match the sha256 the gateway sent ({sha256[:12]})"
                )
            target = self.settings.directory / f"{env_hash}.tar.gz"
            os.replace(name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        entry = self.entries[env_hash] = Entry(target, sha256, size)
        log.info("cached an environment", extra={"env": env_hash[:12], "bytes": size})
        self._evict(keep=env_hash)
        return entry

    def _evict(self, keep: str) -> None:
        total = sum(e.size_bytes for e in self.entries.values())
        for env_hash, entry in sorted(self.entries.items(), key=lambda item: item[1].used):
            if total <= self.settings.max_bytes:
                break
            if env_hash != keep:
                total -= entry.size_bytes
                del self.entries[env_hash]
                entry.path.unlink(missing_ok=True)

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "status": "ok",
                "hits": self.hits,
                "misses": self.misses,
                "refused": self.refused,
                "environments": len(self.entries),
                "bytes": sum(e.size_bytes for e in self.entries.values()),
            }
        )


def _serve(entry: Entry, outcome: str) -> web.FileResponse:
    headers = {SHA256_HEADER: entry.sha256, CACHE_HEADER: outcome, "Cache-Control": "no-store"}
    return web.FileResponse(entry.path, headers=headers)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_app(cache: EnvCache) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(cache.session_context)
    app.router.add_get("/environments/{hash}", cache.handle)
    app.router.add_get("/healthz", cache.healthz)
    return app


def main() -> None:
    from scheduler.logs import configure_logging

    configure_logging()
    try:
        settings = CacheSettings.from_env()
    except ValueError as exc:  # ConfigError, SettingsError: named, then exit 2
        log.error("cannot start the environment cache: %s", exc)
        raise SystemExit(2) from None
    log.info(
        "environment cache up",
        extra={"port": settings.port, "upstream": settings.upstream},
    )
    web.run_app(
        build_app(EnvCache(settings)),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
