"""The gateway's in-memory view of function versions: no SQL on the warm path.

Entries are loaded on first use and dropped when Postgres notifies a deploy, rollback or delete
of that function (LISTEN/NOTIFY), or all at once when the notification connection was lost.
"""

from __future__ import annotations

import asyncio

from store import Store, Version


class FunctionCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._versions: dict[tuple[str, int | None], Version] = {}
        self._loading: dict[tuple[str, int | None], asyncio.Future[Version]] = {}
        self._generation: dict[str, int] = {}
        self._changed = asyncio.Event()

    def cached(self, name: str, version: int | None = None) -> Version | None:
        """`resolve` when the version is in memory (no coroutine: the warm path), else None."""
        return self._versions.get((name, version))

    async def resolve(self, name: str, version: int | None = None) -> Version:
        """The given version, or the active one. Raises FunctionNotFound / VersionNotFound."""
        key = (name, version)
        found = self._versions.get(key)
        if found is not None:
            return found
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        fut: asyncio.Future[Version] = asyncio.get_running_loop().create_future()
        self._loading[key] = fut
        generation = self.generation(name)
        try:
            found = await self._store.get_version(name, version)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            self._loading.pop(key, None)
        fut.set_result(found)
        if self.generation(name) == generation:  # not changed while it was being read
            self._versions[key] = found
        return found

    def put(self, version: Version, *, active: bool) -> None:
        self.invalidate(version.function)  # loads in flight must not overwrite this
        self._versions[(version.function, version.version)] = version
        if active:
            self._versions[(version.function, None)] = version

    def invalidate(self, name: str) -> None:
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]
        self._generation[name] = self.generation(name) + 1
        self._changed.set()
        self._changed = asyncio.Event()

    def is_active(self, name: str, version: int) -> bool:
        """Whether the cache already serves `version` as the active one of `name`."""
        cached = self._versions.get((name, None))
        return cached is not None and cached.version == version

    def generation(self, name: str) -> int:
        """How often `name` was invalidated: pass it to `wait_invalidated`."""
        return self._generation.get(name, 0)

    async def wait_invalidated(self, name: str, since: int, timeout_s: float) -> None:
        """Wait until `name` is invalidated after `generation(name)` returned `since`."""
        async with asyncio.timeout(timeout_s):
            while self.generation(name) <= since:
                await self._changed.wait()

    def clear(self) -> None:
        self._versions.clear()
