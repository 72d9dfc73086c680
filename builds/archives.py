"""The packed environments this gateway serves to invoker pods (Kubernetes), and their sha256.

An environment's archive (the tar.gz its build stored in Postgres) is kept as a file in
`<cache>/archives/HASH.tar.gz`: the build that stored it keeps its own, any other gateway
writes it from the database chunks the first time a pod asks (once, however many ask at the
same time). Its sha256, computed as it is written, is what the pod checks before unpacking.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builds.requirements import BuildFailed
from store import Store

log = logging.getLogger("ember.gateway.builds")


@dataclass(slots=True, frozen=True, kw_only=True)
class Archive:
    env_hash: str
    path: Path
    sha256: str
    size_bytes: int


class EnvironmentMissing(BuildFailed):
    """No environment with that hash is stored."""


class Archives:
    def __init__(self, store: Store, directory: Path) -> None:
        self._store = store
        self.directory = directory
        self._known: dict[str, Archive] = {}
        self._writing: dict[str, asyncio.Future[Archive]] = {}

    def remove_leftovers(self) -> None:
        """Delete what writes cut short (a crash) left."""
        if self.directory.is_dir():
            for path in self.directory.glob(".write-*"):
                path.unlink(missing_ok=True)

    def keep(self, env_hash: str, built: Path) -> Archive:
        """Keep the archive a build just stored (moved here; blocking: call it on a thread)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        sha256 = _sha256_of(built)
        target = self.directory / f"{env_hash}.tar.gz"
        shutil.move(built, target)
        archive = Archive(
            env_hash=env_hash,
            path=target,
            sha256=sha256,
            size_bytes=target.stat().st_size,
        )
        self._known[env_hash] = archive
        return archive

    async def get(self, env_hash: str) -> Archive:
        """The archive of an environment, written from the database the first time
        this process is asked (a file left by an earlier run is not trusted).
        Raises EnvironmentMissing."""
        if not re.fullmatch(r"[0-9a-f]{64}", env_hash):
            raise EnvironmentMissing(f"invalid environment hash {env_hash!r}", "")
        known = self._known.get(env_hash)
        if known is not None:
            return known
        writing = self._writing.get(env_hash)
        if writing is None:
            writing = asyncio.get_running_loop().create_future()
            self._writing[env_hash] = writing
            try:
                archive = await self._write(env_hash)
            except BaseException as exc:
                writing.set_exception(exc)
                writing.exception()  # retrieved: nobody else may be waiting
                raise
            finally:
                self._writing.pop(env_hash, None)
            self._known[env_hash] = archive
            writing.set_result(archive)
            return archive
        return await asyncio.shield(writing)

    async def _write(self, env_hash: str) -> Archive:
        target = self.directory / f"{env_hash}.tar.gz"
        env = await self._store.get_environment(env_hash)
        if env is None:
            raise EnvironmentMissing(f"environment {env_hash[:12]} is not in the database", "")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix=".write-", dir=self.directory)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in self._store.environment_chunks(env):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(f.write, chunk)
            os.replace(name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        log.info("wrote an environment's archive", extra={"env": env_hash[:12]})
        return Archive(env_hash=env_hash, path=target, sha256=digest.hexdigest(), size_bytes=size)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
