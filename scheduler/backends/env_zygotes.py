"""Zygotes of the environments the operator trusts (`fn env trust`): the local backend forks the
first instance of a function with requirements from a process that imported them already.

An environment's zygote is a fork of the runtime zygote that, before any wall and before any
function code, put the environment on its path and imported its top-level packages
(`invoker.env_zygote`; the packages are read from its dists' `top_level.txt`, or the operator
names them). It speaks the zygote protocol on a Unix socket in the platform's socket directory
(0700), and forks generic instances exactly as the runtime zygote does: same cgroup, namespaces,
and at specialization the function's uid, seccomp filter and network mode. Only an environment
the operator declared trusted gets one: its import code then runs in a process that later builds
other functions' walls (docs/security.md).

Lifecycle: made in the background when the environment is trusted, and again when one of its
versions is next needed after it was lost (a restart, a crash); at most `max_zygotes` exist (the
least recently used one is retired for a new one). Retired (untrusted, or for room) it forks no
more and exits once its last instance has exited (its instances die with it: they are not cut
short). Each is charged its PSS and counts as one instance against the node's caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import psutil

from scheduler.backends import BackendError
from scheduler.backends.env_packages import top_level_modules
from scheduler.backends.zygote import ForkedHandle, SocketZygote, Zygote

log = logging.getLogger("ember.scheduler.local")  # part of the local backend

MAX_ENV_ZYGOTES = 4
"""Environments' zygotes on one node at most (FN_ENV_ZYGOTES)."""
UNMEASURED_BYTES = 64 << 20
"""What a zygote is charged until its PSS is measured."""

SPARE_BYTES = 16 << 20
"""What a zygote's spare fork is charged (an idle fork of it: 11-13 MB PSS measured)."""
SPARE_DELAY_S = 0.2
"""A taken spare is replaced this long after: off the cold start's CPU."""
MAKE_TIMEOUT_S = 120.0
"""How long an environment's imports may take: a package that blocks at import has its zygote
killed (the failure is shown by `fn env trusted`; made again when next needed)."""
RETRY_S = (30.0, 3600.0)
"""After a failed making, the next try waits this long, doubled at each failure up to the
second: a refused environment (a thread, a descriptor...) fails the same way each time, and
each try imports its packages again, as root (every cold start of its functions asks)."""
FORK_TIMEOUT_S = 3.0
"""How long a fork of an environment's zygote may take (milliseconds, normally): past it, the
zygote is taken for hung, retired, and the cold start forks from the runtime's zygote (within
the instance's start timeout, 10 s)."""

Locate = Callable[[str], Awaitable[Path]]
"""This node's unpacked copy of an environment (`Builder.local_path`)."""
ForkGeneric = Callable[[Zygote, str, str], Awaitable[ForkedHandle]]
"""Fork a generic instance, walled in, from a zygote: name (its cgroup's), address."""


@runtime_checkable
class EnvZygoteBackend(Protocol):
    """A backend that forks the instances of trusted environments from their zygotes."""

    env_zygotes: EnvZygotes | None


@dataclass(slots=True, eq=False)
class EnvZygote:
    """One trusted environment and its zygote, once made."""

    env_hash: str
    modules: list[str]
    """What the operator said to import (empty: its dists' top-level packages)."""
    zygote: Zygote | None = None
    making: asyncio.Task[None] | None = None
    failure: str | None = None
    """Why its last making failed (made again when next needed, after `retry_at`)."""
    attempts: int = 0
    """Makings tried, failed ones included."""
    retry_at: float = 0.0
    retry_s: float = 0.0
    memory_bytes: int = UNMEASURED_BYTES
    imported: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    last_used: float = 0.0
    spare: ForkedHandle | None = None
    """A generic instance forked from it and walled in, ready for the next cold start."""
    refilling: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.zygote is not None and self.zygote.alive

    def as_json(self) -> dict[str, Any]:
        return {
            "hash": self.env_hash,
            "modules": self.modules,
            "state": "ready" if self.ready else "making" if self.making else "not made",
            "pid": self.zygote.process.pid if self.ready and self.zygote else None,
            "imported": self.imported,
            "skipped": self.skipped,
            "pss_bytes": self.memory_bytes if self.ready else 0,
            "spare": self.spare is not None and not self.spare.exited.done(),
            "failure": self.failure,
            "attempts": self.attempts,
        }


class EnvZygotes:
    """The trusted environments of this node and their zygotes."""

    def __init__(
        self,
        socket_dir: str,
        runtime: Callable[[], Awaitable[Zygote]],
        fork_generic: ForkGeneric,
        *,
        max_zygotes: int = MAX_ENV_ZYGOTES,
    ) -> None:
        self._socket_dir = socket_dir
        self._runtime = runtime
        self._fork_generic = fork_generic
        self._spares = 0
        self.locate: Locate | None = None
        """Set by the platform (its builder): where an environment is unpacked on this node."""
        self.max_zygotes = max_zygotes
        self.fork_timeout_s = FORK_TIMEOUT_S
        self.make_timeout_s = MAKE_TIMEOUT_S
        self.trusted: dict[str, EnvZygote] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._lingering: dict[asyncio.Task[None], int] = {}
        """Retired zygotes not exited yet (their instances run): the memory they are charged."""
        self.follows = 0
        """How often the stored list was applied (`follow`): tests await it (`wait_followed`)."""
        self._followed = asyncio.Event()

    def trust(self, env_hash: str, modules: list[str] | None = None, *, make: bool = True) -> None:
        """Trust an environment (`make`: make its zygote now, in the background; else when one
        of its versions is first needed). Trusting it again with other modules remakes it."""
        modules = list(modules or [])
        known = self.trusted.get(env_hash)
        if known is not None and known.modules != modules:
            self.untrust(env_hash)
            known = None
        if known is None:
            known = self.trusted[env_hash] = EnvZygote(env_hash=env_hash, modules=modules)
        if make:
            known.retry_at = 0.0  # (the operator asks again: no waiting)
            self._make_soon(known)

    def untrust(self, env_hash: str) -> bool:
        """Forget an environment; its zygote forks no more and exits once its instances
        have. False: it was not trusted."""
        known = self.trusted.pop(env_hash, None)
        if known is None:
            return False
        self._retire(known, "untrusted")
        return True

    def follow(self, trusted: dict[str, list[str]]) -> None:
        """Make the trusted environments these (hash: modules), as the database lists them:
        those no longer in it are untrusted, new ones trusted (made when first needed), those
        whose modules changed made again."""
        for env_hash in set(self.trusted) - set(trusted):
            self.untrust(env_hash)
        for env_hash, modules in trusted.items():
            known = self.trusted.get(env_hash)
            changed = known is not None and known.modules != list(modules)
            self.trust(env_hash, modules, make=changed)
        self.follows += 1
        self._followed.set()
        self._followed = asyncio.Event()

    async def wait_followed(self, since: int, timeout_s: float) -> None:
        """Wait until the stored list was applied after `follows` was `since`."""
        async with asyncio.timeout(timeout_s):
            while self.follows <= since:
                await self._followed.wait()

    def fork_source(self, env_hash: str | None) -> Zygote | None:
        """The zygote to fork an instance of an environment from: its ready zygote, else None
        (and, if the environment is trusted, its zygote is made in the background)."""
        known = self.trusted.get(env_hash) if env_hash else None
        if known is None:
            return None
        if known.ready:
            known.last_used = time.monotonic()
            return known.zygote
        self._make_soon(known)
        return None

    async def start(self, env_hash: str, instance_id: str, address: str) -> ForkedHandle | None:
        """A generic instance of a trusted environment for a cold start: its zygote's spare
        (replaced in the background), else a fork of its zygote; None: it has no zygote ready
        (or the fork failed), the caller forks one of the runtime's zygote."""
        known = self.trusted.get(env_hash)
        if known is None or not known.ready or known.zygote is None:
            return None
        known.last_used = time.monotonic()
        spare, known.spare = known.spare, None
        self._refill_soon(known)
        if spare is not None and not spare.exited.done():
            return spare
        if spare is not None:
            self._discard(spare)
        # A name and address of its own: if this fork fails or times out, the runtime's
        # zygote forks the instance under its own (this one's cgroup is released meanwhile).
        return await self._fork_or_retire(
            known, f"{instance_id}-env", address.removesuffix(".sock") + "-env.sock"
        )

    async def _fork_or_retire(
        self, known: EnvZygote, instance_id: str, address: str
    ) -> ForkedHandle | None:
        """A fork of the environment's zygote; None if it failed, and if it did not answer in
        time, the zygote is retired (a hung zygote must not hold up its functions' cold
        starts: they fork from the runtime's zygote, and it is made again when next needed)."""
        zygote = known.zygote
        assert zygote is not None
        try:
            async with asyncio.timeout(self.fork_timeout_s):
                return await self._fork_generic(zygote, instance_id, address)
        except BackendError as exc:
            reason = str(exc)
        except TimeoutError:
            reason = f"it did not fork within {self.fork_timeout_s:g}s: retired as hung"
            _failed(known, reason)
            if known.zygote is zygote:
                self._drop_spare(known)
                known.zygote = None
                self._retire_zygote(known, zygote, "hung")
        log.warning(
            "an environment zygote could not fork: the runtime's zygote does",
            extra={"environment": known.env_hash[:12], "reason": reason},
        )
        return None

    def usage(self) -> tuple[int, int]:
        """Zygotes on the node (made, or being made) and their spares, and the memory they are
        charged."""
        alive = [k for k in self.trusted.values() if k.ready or k.making]
        spares = sum(k.spare is not None for k in alive)
        # Retired ones live on until their instances have exited: still charged till then.
        retired = len(self._lingering), sum(self._lingering.values())
        return (
            len(alive) + spares + retired[0],
            sum(k.memory_bytes for k in alive) + spares * SPARE_BYTES + retired[1],
        )

    def _refill_soon(self, known: EnvZygote) -> None:
        if known.refilling is None or known.refilling.done():
            known.refilling = asyncio.create_task(
                self._refill(known), name=f"environment zygote spare {known.env_hash[:12]}"
            )

    async def _refill(self, known: EnvZygote) -> None:
        """Fork the zygote's next spare (its walls built off the request path)."""
        await asyncio.sleep(SPARE_DELAY_S)
        zygote = known.zygote
        if zygote is None or not zygote.alive or known.spare is not None:
            return
        self._spares += 1
        name = f"env-{known.env_hash[:12]}-spare-{self._spares}"
        spare = await self._fork_or_retire(known, name, f"unix:{self._socket_dir}/{name}.sock")
        if spare is None:
            return
        if known.zygote is zygote and known.spare is None:
            known.spare = spare
        else:  # retired, or taken and refilled meanwhile
            self._discard(spare)

    def _discard(self, spare: ForkedHandle) -> None:
        """Stop a spare nobody will take (its process group, then its cgroup)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(spare.pid, signal.SIGKILL)
        if spare.host.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spare.host[len("unix:") :])
        if spare.cgroup is not None:
            cgroup = spare.cgroup
            task = asyncio.create_task(_release_when_gone(spare, cgroup.release), name="spare")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _make_soon(self, known: EnvZygote) -> None:
        if known.ready or known.making is not None or self.locate is None or self.max_zygotes <= 0:
            return
        if time.monotonic() < known.retry_at:
            return
        known.attempts += 1
        known.making = asyncio.create_task(
            self._make(known), name=f"environment zygote {known.env_hash[:12]}"
        )

    async def _make(self, known: EnvZygote) -> None:
        address = f"{self._socket_dir}/env-{known.env_hash[:16]}.sock"
        try:
            assert self.locate is not None
            gone, known.zygote = known.zygote, None
            if gone is not None:  # it crashed: its spare died with it, its socket is closed
                self._drop_spare(known)
                self._retire_zygote(known, gone, "it exited")
            self._make_room(known)
            path = await self.locate(known.env_hash)
            modules = known.modules or await asyncio.to_thread(top_level_modules, path)
            if not modules:
                raise BackendError("its dists name no top-level package (top_level.txt)")
            runtime = await self._runtime()
            started = time.perf_counter()
            try:  # (the zygote kills it at make_timeout_s; this is in case it cannot)
                async with asyncio.timeout(self.make_timeout_s + 10):
                    handle = await runtime.fork_zygote(
                        f"unix:{address}", str(path), modules, timeout_s=self.make_timeout_s
                    )
            except TimeoutError:
                raise BackendError(
                    f"its imports took longer than {self.make_timeout_s:g}s"
                ) from None
            try:
                reader, writer = await asyncio.open_unix_connection(address)
            except OSError as exc:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.pid, signal.SIGKILL)
                raise BackendError(f"cannot reach it: {exc}") from exc
            zygote = await Zygote.ready(SocketZygote(handle, reader, writer))
            known.imported = list(zygote.capabilities.get("imported", []))
            known.skipped = dict(zygote.capabilities.get("skipped", {}))
            known.memory_bytes = await asyncio.to_thread(_pss_bytes, handle.pid)
            known.zygote, known.failure, known.retry_s = zygote, None, 0.0
            known.last_used = time.monotonic()
            if self.trusted.get(known.env_hash) is not known:  # untrusted meanwhile
                self._retire(known, "untrusted while it was made")
                return
            self._refill_soon(known)
            log.info(
                "environment zygote ready",
                extra={
                    "environment": known.env_hash[:12],
                    "pid": handle.pid,
                    "imported": known.imported,
                    "skipped": sorted(known.skipped),
                    "make_ms": round((time.perf_counter() - started) * 1000, 1),
                    "pss_bytes": known.memory_bytes,
                },
            )
        except Exception as exc:
            _failed(known, str(exc))
            log.warning(
                "no zygote for a trusted environment: its instances import it",
                extra={
                    "environment": known.env_hash[:12],
                    "reason": str(exc),
                    "retry_s": known.retry_s,
                },
            )
        finally:
            known.making = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)

    def _make_room(self, known: EnvZygote) -> None:
        """Retire the least recently used zygotes beyond the bound."""
        made = [k for k in self.trusted.values() if k is not known and (k.ready or k.making)]
        for victim in sorted(made, key=lambda k: k.last_used)[
            : max(0, len(made) + 1 - self.max_zygotes)
        ]:
            self._drop_spare(victim)
            if victim.zygote is not None:
                zygote, victim.zygote = victim.zygote, None
                self._retire_zygote(victim, zygote, "the bound FN_ENV_ZYGOTES")

    def _retire(self, known: EnvZygote, why: str) -> None:
        if known.making is not None:
            known.making.cancel()
        self._drop_spare(known)
        zygote, known.zygote = known.zygote, None
        if zygote is not None:
            self._retire_zygote(known, zygote, why)

    def _drop_spare(self, known: EnvZygote) -> None:
        if known.refilling is not None:
            known.refilling.cancel()
        spare, known.spare = known.spare, None
        if spare is not None:
            self._discard(spare)

    def _retire_zygote(self, known: EnvZygote, zygote: Zygote, why: str) -> None:
        log.info(
            "retiring an environment zygote",
            extra={
                "environment": known.env_hash[:12],
                "reason": why,
                "instances": len(zygote.children),
            },
        )
        task = asyncio.create_task(
            _close_when_idle(zygote), name=f"retire zygote {known.env_hash[:12]}"
        )
        self._retiring.add(task)
        self._lingering[task] = known.memory_bytes
        task.add_done_callback(self._retiring.discard)
        task.add_done_callback(lambda done: self._lingering.pop(done, None))

    async def close(self) -> None:
        for known in list(self.trusted.values()):
            self._drop_spare(known)
            if known.making is not None:
                known.making.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await known.making
        for known in self.trusted.values():
            if known.zygote is not None:
                await known.zygote.close()
        for task in list(self._retiring):
            if task.get_name() != "spare":  # (a spare's cgroup is released once it is gone)
                task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)


def _failed(known: EnvZygote, reason: str) -> None:
    """Its making failed, or it hung: made again when next needed, not before a while."""
    known.failure = reason
    known.retry_s = min(max(known.retry_s * 2, RETRY_S[0]), RETRY_S[1])
    known.retry_at = time.monotonic() + known.retry_s


async def _close_when_idle(zygote: Zygote) -> None:
    """Close a retired zygote once the instances it forked have exited (they die with it)."""
    try:
        while zygote.children and zygote.alive:
            await asyncio.wait(
                [asyncio.ensure_future(h.wait()) for h in list(zygote.children.values())]
            )
    finally:
        await zygote.close()


async def _release_when_gone(spare: ForkedHandle, release: Callable[[], None]) -> None:
    try:
        async with asyncio.timeout(5.0):
            await spare.wait()
    finally:
        await asyncio.to_thread(release)


def _pss_bytes(pid: int) -> int:
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_full_info().pss)
    return UNMEASURED_BYTES
