"""Function templates on this node (the local backend's side of `invoker.template`).

After a version is specialized once, `Templates.keep` makes its template off the request path:
a generic instance forked by the zygote (its own cgroup and namespaces, like any instance),
specialized with the same message plus `"template": true`. It imports the function, then
forks the version's next instances on request: a cold start is then a fork (~ms), not an
import. Each fork is moved into a cgroup of its own (the platform learns its pid from the
kernel: SO_PASSCRED) before it may serve. A template is charged its measured PSS against the
node's caps, and dropped (retired: no more forks; it exits once its forks have) when its
version is replaced or deleted, or when the node needs its room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from invoker.protocol import encode_frame, read_frame
from scheduler.backends import BackendError
from scheduler.backends.template_process import (
    UNMEASURED_BYTES,
    Template,
    TemplateKey,
    cgroup_bytes,
    fork_gone,
    move_into,
)
from scheduler.backends.template_process import (
    template_pss_bytes as template_pss_bytes,
)
from scheduler.backends.zygote import ForkedHandle

if TYPE_CHECKING:
    from invoker.specs import SpecializeSpec
    from scheduler.backends import InstanceHandle
    from scheduler.backends.cgroups import InstanceCgroup
    from store.records import Version

log = logging.getLogger("ember.scheduler.local")

MAKE_TIMEOUT_S = 60.0
"""Longest a template's import may take (it is off the request path)."""
SPARE_REFILL_DELAY_S = 0.2
"""How long after a spare fork was taken the next is made: not while the cold start it serves
is under way (they would share the CPU)."""
RETIRED_POLL_S, RETIRED_GRACE_S = 1.0, 2.0
"""How often a retired template's forks are looked for; how long it has to exit after."""


class Starter(Protocol):
    """What templates need of the local backend."""

    async def start_instance(
        self, instance_id: str, version: Version | None = None
    ) -> InstanceHandle: ...
    def instance_spec(self, handle: InstanceHandle, version: Version) -> SpecializeSpec: ...
    async def stop_instance(self, handle: InstanceHandle, *, grace_s: float) -> None: ...
    def new_cgroup(
        self, instance_id: str, version: Version | None = None
    ) -> InstanceCgroup | None: ...


class Templates:
    """The node's templates, by version."""

    def __init__(self, backend: Starter, socket_dir: str) -> None:
        self._backend = backend
        self.by_key: dict[TemplateKey, Template] = {}
        self.refused: dict[TemplateKey, str] = {}
        """Versions that cannot have one (their module's state cannot be forked), and why."""
        self._making: dict[TemplateKey, asyncio.Task[None]] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self.spares: set[ForkedHandle] = set()
        self._counter = 0
        self._changed = asyncio.Event()
        self._socket_dir = socket_dir

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `predicate()` holds, checked after each template made, refused or gone
        (tests and tools); raises TimeoutError."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def get(self, version: Version) -> Template | None:
        template = self.by_key.get((version.function, version.version))
        return template if template is not None and template.alive else None

    def take_spare(self, template: Template) -> ForkedHandle | None:
        """The template's spare fork, if it has one ready (and another is made)."""
        spare, template.spare = template.spare, None
        template.spare_bytes = 0
        self._fill(template, delay_s=SPARE_REFILL_DELAY_S)
        return spare if spare is not None and not spare.exited.done() else None

    def _fill(self, template: Template, delay_s: float = 0.0) -> None:
        if template.filling is None and not template.retired and template.alive:
            template.filling = asyncio.create_task(
                self._make_spare(template, delay_s), name="spare fork"
            )

    async def _make_spare(self, template: Template, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._counter += 1
        name = f"spare-{self._counter}"
        try:
            spare = await self.fork(template, name, f"unix:{self._socket_dir}/{name}.sock")
        except BackendError as exc:
            log.warning("cannot fork a spare", extra={"key": template.key, "error": str(exc)})
            return
        finally:
            template.filling = None
        self.spares.add(spare)
        spare.exited.add_done_callback(lambda _: self.spares.discard(spare))
        if template.retired or not template.alive:
            await self._backend.stop_instance(spare, grace_s=0.5)
            return
        template.spare = spare
        template.spare_bytes = await asyncio.to_thread(template_pss_bytes, spare.pid)

    async def fork(self, template: Template, instance_id: str, address: str) -> ForkedHandle:
        """An instance forked from its version's template, in a cgroup of its own before it
        may run anything of its own."""
        cgroup = self._backend.new_cgroup(instance_id, template.version)
        handle: ForkedHandle | None = None
        try:
            handle, go = await template.fork(address)
            with go:  # (moving a process can wait for an RCU grace period: not on the loop)
                await asyncio.to_thread(
                    move_into, handle.pid, cgroup.procs_files if cgroup is not None else []
                )
                go.send(b"g")
        except BaseException as exc:
            if handle is not None and handle.pid > 0:
                with contextlib.suppress(OSError):
                    os.killpg(handle.pid, signal.SIGKILL)
            if cgroup is not None:
                cgroup.kill()
                asyncio.get_running_loop().run_in_executor(None, cgroup.release)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address.removeprefix("unix:"))
            if isinstance(exc, OSError):
                raise BackendError(f"cannot fork from the template: {exc}") from exc
            raise
        handle.cgroup = cgroup
        template.handed = [h for h in template.handed if not fork_gone(h)] + [handle]
        return handle

    def usage(self) -> tuple[int, int]:
        """Templates kept (and being made), and the memory they are charged: a template and
        its spare fork count as one instance, charged the PSS of both as measured, or what
        their cgroups hold now if more."""
        kept = [t for t in self.by_key.values() if t.alive]
        making = len(self._making)
        charged = sum(
            max(t.charge_bytes, cgroup_bytes(t.handle))
            + max(t.spare_bytes, cgroup_bytes(t.spare) if t.spare else 0)
            for t in kept
        )
        return len(kept) + making, charged + making * UNMEASURED_BYTES

    def keep(self, version: Version, meta: Mapping[str, object], code: bytes) -> None:
        """Make the version's template in the background, unless it has one (or cannot)."""
        key = (version.function, version.version)
        if version.version <= 0 or key in self._making or key in self.refused or self.get(version):
            return
        self._making[key] = asyncio.create_task(
            self._make(key, version, meta, code), name=f"template {key[0]}:{key[1]}"
        )

    async def _make(
        self, key: TemplateKey, version: Version, meta: Mapping[str, object], code: bytes
    ) -> None:
        started = time.perf_counter()
        try:
            template = await self._start(key, version, meta, code)
        finally:
            if self._making.get(key) is asyncio.current_task():
                del self._making[key]
            self._changed.set()
        if template is None:
            return
        log.info(
            "template ready",
            extra={
                "key": key,
                "pss_bytes": template.charge_bytes,
                "make_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        self._fill(template)
        watcher = asyncio.create_task(self._watch(template), name=f"watch template {key}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _start(
        self, key: TemplateKey, version: Version, meta: Mapping[str, object], code: bytes
    ) -> Template | None:
        """A generic instance specialized as the version's template, or None (refused: the
        reason is kept, the instance stopped)."""
        backend = self._backend
        self._counter += 1
        try:
            handle = await backend.start_instance(f"template-{self._counter}")
        except BackendError as exc:
            log.warning("cannot start a template", extra={"key": key, "error": str(exc)})
            return None
        assert isinstance(handle, ForkedHandle)
        control = None
        writer: asyncio.StreamWriter | None = None
        try:
            sandbox = backend.instance_spec(handle, version)
            async with asyncio.timeout(MAKE_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(handle.host[len("unix:") :])
                writer.writelines(
                    encode_frame({**meta, "sandbox": sandbox, "template": True}, code)
                )
                reply, _ = await read_frame(reader)
            if reply.get("ok") and reply.get("template") == "ready":
                control = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
            else:
                error = reply.get("error") or {}
                refusal = f"{error.get('type')}: {error.get('message')}"
        except Exception as exc:  # (its import timed out, it died, the backend failed...)
            refusal = repr(exc)
        except BaseException:  # cancelled: the platform is stopping
            await asyncio.shield(backend.stop_instance(handle, grace_s=0.5))
            raise
        finally:
            if writer is not None:
                writer.close()
        if control is None or self._making.get(key) is not asyncio.current_task():
            if control is None:
                log.info("no template", extra={"key": key, "reason": refusal})
                self.refused[key] = refusal
            else:  # dropped while it was made
                control.close()
            await backend.stop_instance(handle, grace_s=1.0)
            return None
        template = Template(key=key, version=version, handle=handle, control=control)
        template.start_reading()
        template.charge_bytes = await asyncio.to_thread(template_pss_bytes, handle.pid)
        if self._making.get(key) is not asyncio.current_task():  # dropped while measured
            template.close()
            await backend.stop_instance(handle, grace_s=1.0)
            return None
        self.by_key[key] = template
        return template

    async def _watch(self, template: Template) -> None:
        await template.handle.wait()
        template.close()
        if self.by_key.get(template.key) is template:
            del self.by_key[template.key]
        self._changed.set()
        await self._backend.stop_instance(template.handle, grace_s=0.5)  # (its cgroup, socket)

    def drop(self, function: str, keep_version: int | None = None) -> int:
        """Retire the function's templates (every one for ""), but `keep_version`'s: no more
        forks from them; returns how many."""

        def dropped(key: TemplateKey) -> bool:
            return function in ("", key[0]) and key[1] != keep_version

        for key in [k for k in self._making if dropped(k)]:
            del self._making[key]  # (it stops what it made when it sees that)
        retired = [self.by_key.pop(k) for k in list(self.by_key) if dropped(k)]
        for template in retired:
            template.retire()
            expiry = asyncio.create_task(self._expire(template), name=f"expire {template.key}")
            self._watchers.add(expiry)
            expiry.add_done_callback(self._watchers.discard)
            if template.spare is not None:
                spare, template.spare = template.spare, None
                task = asyncio.create_task(self._backend.stop_instance(spare, grace_s=0.5))
                self._watchers.add(task)
                task.add_done_callback(self._watchers.discard)
        for key in [k for k in self.refused if dropped(k)]:
            del self.refused[key]
        self._changed.set()
        return len(retired)

    async def _expire(self, template: Template) -> None:
        """A retired template exits once its forks have; its code could make it stay (it is
        no longer charged): it is stopped once the forks are gone, by their cgroups."""
        while not template.handle.exited.done() and not all(map(fork_gone, template.handed)):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETIRED_POLL_S):
                    await template.handle.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RETIRED_GRACE_S):
                await template.handle.wait()
        if not template.handle.exited.done():  # (else `_watch` stops what is left)
            await self._backend.stop_instance(template.handle, grace_s=0.5)

    async def close(self) -> None:
        fillers = [t.filling for t in self.by_key.values() if t.filling is not None]
        for task in [*self._making.values(), *self._watchers, *fillers]:
            task.cancel()
        await asyncio.gather(
            *self._making.values(), *self._watchers, *fillers, return_exceptions=True
        )
        await asyncio.gather(
            *(self._backend.stop_instance(s, grace_s=0.5) for s in list(self.spares)),
            return_exceptions=True,
        )
        for template in self.by_key.values():
            template.close()
