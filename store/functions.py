"""Functions, their immutable versions, and the environments and builds their requirements
make (the archives are kept in chunks)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from store.base import StoreBase, retry_once
from store.errors import FunctionNotFound, NotFound, StoreError, VersionNotFound
from store.queries import QUERIES
from store.records import (
    NO_PACKAGE,
    Build,
    Environment,
    Function,
    FunctionConfig,
    Package,
    Row,
    Version,
    code_digest,
)


@dataclass(slots=True, frozen=True, kw_only=True)
class TrustedEnvironment:
    """An environment the operator trusts: the local backend keeps a zygote of it."""

    hash: str
    modules: list[str]
    """What its zygote imports (empty: its dists' top-level packages)."""
    trusted_at: datetime.datetime
    requirements: str
    lock: str
    """Every package installed (`name==version --hash=...`): what trusting it trusts."""

    @classmethod
    def from_row(cls, row: Row) -> TrustedEnvironment:
        return cls(
            hash=row["hash"],
            modules=list(row["modules"]),
            trusted_at=row["trusted_at"],
            requirements=row["requirements"],
            lock=row["lock"],
        )


class FunctionStore(StoreBase):
    """Functions, versions, environments and builds."""

    # -- functions and versions -------------------------------------------------------------

    async def create_version(
        self,
        name: str,
        *,
        source: str,
        filename: str,
        config: FunctionConfig,
        package: Package = NO_PACKAGE,
    ) -> Version:
        """Store a new immutable version and make it the active one, in one transaction.
        Its sha256 covers what it runs: the code (the archive when there is one, else the
        source), the environment and the modules it preimports."""
        sha256 = code_digest(package.archive or source.encode(), package.env_hash, config.preimport)
        async with self._conn() as conn, conn.transaction():
            number = await conn.fetchval(QUERIES["create_function_or_bump"], name)
            row = await conn.fetchrow(
                QUERIES["insert_version"],
                name,
                number,
                source,
                sha256,
                filename,
                config.entry,
                dict(config.env),
                config.timeout_s,
                config.memory_bytes,
                config.concurrency,
                config.max_attempts,
                config.max_event_age_s,
                package.archive,
                package.requirements,
                package.env_hash,
                package.lock,
                list(config.preimport),
                list(package.files),
                config.network,
                config.cpus,
                config.style,
                dict(config.style_options),
            )
            if config.access_json() != FunctionConfig().access_json():
                row = await conn.fetchrow(
                    QUERIES["set_version_access"], name, number, config.access_json()
                )
            await conn.execute(QUERIES["set_active_version"], name, number)
            await conn.execute(QUERIES["notify_function_changed"], name, number)
        assert row is not None
        return Version.from_row(row)

    @retry_once
    async def get_function(self, name: str) -> Function:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_function"], name)
        if row is None:
            raise FunctionNotFound(name)
        return Function.from_row(row)

    @retry_once
    async def list_functions(self) -> list[Function]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_functions"])
        return [Function.from_row(r) for r in rows]

    @retry_once
    async def get_version(self, name: str, version: int | None = None) -> Version:
        """The given version of a function, or its active version when `version` is None."""
        async with self._conn() as conn:
            if version is None:
                row = await conn.fetchrow(QUERIES["get_active_version"], name)
            else:
                row = await conn.fetchrow(QUERIES["get_version"], name, version)
            if (
                row is None
                and version is not None
                and await conn.fetchval(QUERIES["function_exists"], name)
            ):
                raise VersionNotFound(name, version)
        if row is None:
            raise FunctionNotFound(name)
        return Version.from_row(row)

    @retry_once
    async def list_versions(self, name: str) -> list[tuple[Version, bool]]:
        """Every version of a function, newest first, with whether it is the active one."""
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_versions"], name)
        if not rows:
            raise FunctionNotFound(name)
        return [(Version.from_row(r), r["active"]) for r in rows]

    async def set_active_version(self, name: str, version: int | None = None) -> int:
        """Point the function at `version` (default: the one before the active one)."""
        async with self._conn() as conn, conn.transaction():
            active = await conn.fetchval(QUERIES["lock_function"], name)
            if active is None:
                raise FunctionNotFound(name)
            if version is None:
                version = await conn.fetchval(QUERIES["previous_version"], name)
                if version is None:
                    raise VersionNotFound(name, active - 1)
            elif await conn.fetchrow(QUERIES["get_version"], name, version) is None:
                raise VersionNotFound(name, version)
            await conn.execute(QUERIES["set_active_version"], name, version)
            await conn.execute(QUERIES["notify_function_changed"], name, version)
        return version

    async def delete_function(self, name: str) -> None:
        """Delete a function with its versions, activation records and policy."""
        async with self._conn() as conn, conn.transaction():
            if await conn.fetchval(QUERIES["delete_function"], name) is None:
                raise FunctionNotFound(name)
            await conn.execute(QUERIES["delete_activations"], name)
            await conn.execute(QUERIES["delete_function_policy"], name)
            await conn.execute(QUERIES["delete_deliveries"], name)
            await conn.execute(QUERIES["notify_function_changed"], name, 0)

    # -- environments and builds ------------------------------------------------------------

    @retry_once
    async def get_environment(self, env_hash: str) -> Environment | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(QUERIES["get_environment"], env_hash)
        return Environment.from_row(row) if row is not None else None

    async def put_environment(
        self, env: Environment, archive: Path, *, chunk_bytes: int = 8 << 20
    ) -> bool:
        """Store an environment and its archive (a file, read a chunk at a time), in one
        transaction: readers never see half of one. Returns False when an environment with
        that hash was stored already (this one is then dropped)."""
        size = (await asyncio.to_thread(archive.stat)).st_size
        async with self._conn() as conn, conn.transaction():
            created = await conn.fetchval(
                QUERIES["insert_environment"],
                env.hash,
                env.requirements,
                env.lock,
                env.python,
                size,
                env.unpacked_bytes,
                -(-size // chunk_bytes),
                env.build_s,
            )
            if created is None:
                return False
            with archive.open("rb") as f:
                seq = 0
                while chunk := await asyncio.to_thread(f.read, chunk_bytes):
                    await conn.execute(QUERIES["insert_environment_chunk"], env.hash, seq, chunk)
                    seq += 1
        return True

    async def environment_chunks(self, env: Environment) -> AsyncIterator[bytes]:
        """The archive of an environment, a chunk at a time (one query each: a large
        environment is never held in memory whole)."""
        for seq in range(env.chunks):
            async with self._conn() as conn:
                data = await conn.fetchval(QUERIES["get_environment_chunk"], env.hash, seq)
            if data is None:
                raise StoreError(f"environment {env.hash[:12]} is missing chunk {seq}")
            yield data

    async def record_build(
        self, function: str, env_hash: str, status: str, log: str, duration_s: float
    ) -> Build:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                QUERIES["insert_build"], function, env_hash, status, log, duration_s
            )
        assert row is not None
        return Build.from_row(row)

    @retry_once
    async def list_builds(self, function: str, *, limit: int = 5) -> list[Build]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_builds"], function, limit)
        return [Build.from_row(r) for r in rows]

    # -- trusted environments (the admin's) -------------------------------------------------

    async def trust_environment(self, env_hash: str, modules: list[str]) -> TrustedEnvironment:
        """Trust an environment (every gateway is told); raises NotFound when there is none
        with that hash."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["trust_environment"], env_hash, modules)
            if row is not None:
                await conn.execute(QUERIES["notify_trust_changed"])
        if row is None:
            raise NotFound(
                f"no environment {env_hash}: a deploy with requirements builds one "
                "(fn env trust --function NAME trusts the one a deployed function uses)"
            )
        return TrustedEnvironment.from_row(row)

    async def untrust_environment(self, env_hash: str) -> bool:
        """Untrust an environment (every gateway is told); False: it was not trusted."""
        async with self._conn() as conn, conn.transaction():
            removed = await conn.fetchval(QUERIES["untrust_environment"], env_hash) is not None
            if removed:
                await conn.execute(QUERIES["notify_trust_changed"])
            return removed

    @retry_once
    async def list_trusted_environments(self) -> list[TrustedEnvironment]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_trusted_environments"])
        return [TrustedEnvironment.from_row(r) for r in rows]
