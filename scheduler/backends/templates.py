"""Function templates on this node (the local backend's side of `invoker.template`).

When the scheduler says a version earned one (`scheduler.upkeep`: it cold-started again, or
its import is slow), `Templates.keep` makes its template off the request path, one at a time
and once no instance has started for a moment: a generic instance forked by the zygote (its
own cgroup and namespaces, like any instance), specialized with the same message plus
`"template": true`. It imports the function, then forks the version's next instances on
request: a cold start is then a fork (~ms), not an import. Each fork is moved into a cgroup of
its own (the platform learns its pid from the kernel: SO_PASSCRED) before it may serve.

A template is charged its measured PSS against the node's caps; at most `max_templates` are
kept, the least recently used retired first. One in use (a fork of it runs, or ran within its
function's keep-alive) keeps a spare fork ready, charged as an instance. A template is dropped
(retired: no more forks; it exits once its forks have) when its version is replaced or deleted,
when it is the least recently used and another is made, or when the node needs its room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
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
SPARE_MIN_KEEP_S = 60.0
"""A spare is kept for the function's keep-alive, but at least this, after the template's last
fork is gone: it serves the cold start after a scale to zero, which comes a keep-alive after
the last call at the soonest (a fork made on demand waits ~10-20 ms to be moved into its
cgroup, an RCU grace period; the spare has been moved already)."""
"""How long after a spare fork was taken the next is made: not while the cold start it serves
is under way (they would share the CPU)."""
RETIRED_POLL_S, RETIRED_GRACE_S = 1.0, 2.0
"""How often a retired template's forks are looked for; how long it has to exit after."""
QUIET_S, MAX_DEFER_S = 0.3, 30.0
"""A template is made once no instance has started for `QUIET_S` (its import would share the
CPU with a cold start's), but at most `MAX_DEFER_S` after it was earned."""
MAX_TEMPLATES = 32
"""Templates kept on a node at most (FN_TEMPLATE_MAX)."""


@dataclass(slots=True, eq=False)
class Wanted:
    """A template the scheduler asked for, not made yet."""

    version: Version
    meta: Mapping[str, object]
    code: bytes
    keep_alive_s: float
    since: float


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

    def __init__(
        self, backend: Starter, socket_dir: str, max_templates: int = MAX_TEMPLATES
    ) -> None:
        self._backend = backend
        self.max_templates = max_templates
        self.by_key: dict[TemplateKey, Template] = {}
        self.wanted: dict[TemplateKey, Wanted] = {}
        """Earned, to be made (in this order) by `_maker`."""
        self._maker: asyncio.Task[None] | None = None
        self._instance_started = asyncio.Event()
        self._fits: Callable[[], bool] = lambda: True
        """Whether the node has room for one more instance (the scheduler's caps)."""
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

    async def fork_instance(
        self, template: Template, instance_id: str, address: str
    ) -> ForkedHandle:
        """An instance of the template's version: its spare fork if one is ready, else a new
        fork. Used now, the template keeps a spare for the next (made a moment later)."""
        template.used_at = time.monotonic()
        spare, template.spare = template.spare, None
        template.spare_bytes = 0
        if template.spare_timer is not None:
            template.spare_timer.cancel()
        try:
            handle = spare if spare is not None and not spare.exited.done() else None
            handle = handle or await self.fork(template, instance_id, address)
            handle.exited.add_done_callback(lambda _: self._fork_ended(template))
            return handle
        finally:
            self._fill(template, delay_s=SPARE_REFILL_DELAY_S)

    def _fill(self, template: Template, delay_s: float = 0.0) -> None:
        if template.filling is None and not template.retired and template.alive:
            template.filling = asyncio.create_task(
                self._make_spare(template, delay_s), name="spare fork"
            )

    async def _make_spare(self, template: Template, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if template.spare is not None or not self._fits():  # (a spare is charged an instance)
            template.filling = None
            return
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
        self._expire_spare(template)
        template.spare_bytes = await asyncio.to_thread(template_pss_bytes, spare.pid)

    def _fork_ended(self, template: Template) -> None:
        """An instance forked from it is gone: the version was in use until now."""
        template.used_at = time.monotonic()

    def _expire_spare(self, template: Template) -> None:
        """Stop the template's spare once no instance forked from it has run for its
        function's keep-alive (at least `SPARE_MIN_KEEP_S`)."""
        template.spare_timer = None
        if template.spare is None:
            return
        running = any(h is not template.spare and not fork_gone(h) for h in template.handed)
        left_s = (
            template.spare_keep_s
            if running
            else template.used_at + template.spare_keep_s - time.monotonic()
        )
        if left_s > 0:
            template.spare_timer = asyncio.get_running_loop().call_later(
                left_s, self._expire_spare, template
            )
            return
        spare, template.spare = template.spare, None
        template.spare_bytes = 0
        self._spawn(self._backend.stop_instance(spare, grace_s=0.5), "stop a spare fork")

    def _spawn(self, work: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

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
            released = None
            if cgroup is not None:
                cgroup.kill()
                released = asyncio.get_running_loop().run_in_executor(None, cgroup.release)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address.removeprefix("unix:"))
            if isinstance(exc, OSError | BackendError) and released is not None:
                # The caller makes a generic instance of this name instead: its cgroup has
                # this one's name, and must not be removed by this release.
                await released
            if isinstance(exc, OSError):
                raise BackendError(f"cannot fork from the template: {exc}") from exc
            raise
        handle.cgroup = cgroup
        template.handed = [h for h in template.handed if not fork_gone(h)] + [handle]
        return handle

    def usage(self) -> tuple[int, int]:
        """Templates and spare forks kept (and templates being made), each charged as an
        instance, and the memory they are charged: their PSS as measured, or what their
        cgroups hold now if more."""
        kept = [t for t in self.by_key.values() if t.alive]
        spares = sum(1 for t in kept if t.spare is not None)
        making = len(self._making)
        charged = sum(
            max(t.charge_bytes, cgroup_bytes(t.handle))
            + max(t.spare_bytes, cgroup_bytes(t.spare) if t.spare else 0)
            for t in kept
        )
        return len(kept) + spares + making, charged + making * UNMEASURED_BYTES

    def keep(
        self,
        version: Version,
        meta: Mapping[str, object],
        code: bytes,
        *,
        keep_alive_s: float,
        fits: Callable[[], bool],
    ) -> None:
        """Make the version's template in the background, unless it has one (or cannot):
        after the ones asked for before, once no instance has started for `QUIET_S` (at most
        `MAX_DEFER_S` from now), if the node has room then (`fits`)."""
        key = (version.function, version.version)
        self._fits = fits
        if (
            version.version <= 0
            or self.max_templates <= 0
            or key in self.wanted
            or key in self._making
            or key in self.refused
            or self.get(version)
        ):
            return
        self.wanted[key] = Wanted(version, meta, code, keep_alive_s, time.monotonic())
        if self._maker is None or self._maker.done():
            self._maker = asyncio.create_task(self._make_wanted(), name="template maker")

    async def _make_wanted(self) -> None:
        while self.wanted:
            key, wanted = next(iter(self.wanted.items()))
            await self._quiet(wanted.since + MAX_DEFER_S)
            if self.wanted.get(key) is not wanted:  # dropped meanwhile
                continue
            del self.wanted[key]
            if self.get(wanted.version):
                continue
            if not self._room_for_one():
                log.info("no room for a template", extra={"key": key})
                continue
            making = self._making[key] = asyncio.create_task(
                self._make(key, wanted), name=f"template {key[0]}:{key[1]}"
            )
            await asyncio.wait([making])

    def started(self) -> None:
        """An instance is starting on this node (`_quiet` waits for a moment without)."""
        self._instance_started.set()

    async def _quiet(self, deadline: float) -> None:
        """Wait until no instance has started for `QUIET_S`, or until `deadline`."""
        while (left_s := deadline - time.monotonic()) > 0:
            self._instance_started.clear()
            try:
                async with asyncio.timeout(min(QUIET_S, left_s)):
                    await self._instance_started.wait()
            except TimeoutError:
                if left_s > QUIET_S:
                    return

    def _room_for_one(self) -> bool:
        """Room for one more template: under the bound (retiring the least recently used
        one), and in the node's free room."""
        kept = [t for t in self.by_key.values() if t.alive]
        if len(kept) >= self.max_templates:
            self._retire(min(kept, key=lambda t: t.used_at), "the least recently used")
        return self._fits()

    def give_room(self) -> bool:
        """Free an instance's room for the node: the least recently used template's spare
        fork, else that template; False if there is none."""
        kept = sorted((t for t in self.by_key.values() if t.alive), key=lambda t: t.used_at)
        for template in kept:
            if template.spare is not None:
                spare, template.spare = template.spare, None
                template.spare_bytes = 0
                self._spawn(self._backend.stop_instance(spare, grace_s=0.5), "stop a spare fork")
                return True
        if kept:
            self._retire(kept[0], "the node needs its room")
        return bool(kept)

    async def _make(self, key: TemplateKey, wanted: Wanted) -> None:
        started = time.perf_counter()
        try:
            template = await self._start(key, wanted.version, wanted.meta, wanted.code)
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
        template.used_at = time.monotonic()
        template.spare_keep_s = max(wanted.keep_alive_s, SPARE_MIN_KEEP_S)
        self._spawn(self._watch(template), f"watch template {key}")

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
        if template.spare_timer is not None:
            template.spare_timer.cancel()
        if self.by_key.get(template.key) is template:
            del self.by_key[template.key]
        self._changed.set()
        await self._backend.stop_instance(template.handle, grace_s=0.5)  # (its cgroup, socket)

    def drop(self, function: str, keep_version: int | None = None) -> int:
        """Retire the function's templates (every one for ""), but `keep_version`'s: no more
        forks from them; returns how many."""

        def dropped(key: TemplateKey) -> bool:
            return function in ("", key[0]) and key[1] != keep_version

        for key in [k for k in self.wanted if dropped(k)]:
            del self.wanted[key]
        for key in [k for k in self._making if dropped(k)]:
            del self._making[key]  # (it stops what it made when it sees that)
        retired = [self.by_key[k] for k in list(self.by_key) if dropped(k)]
        for template in retired:
            self._retire(template, "its version was replaced or deleted")
        for key in [k for k in self.refused if dropped(k)]:
            del self.refused[key]
        self._changed.set()
        return len(retired)

    def _retire(self, template: Template, why: str) -> None:
        """No more forks from it, no longer charged; it exits once its forks have."""
        if self.by_key.get(template.key) is template:
            del self.by_key[template.key]
        log.info("template retired", extra={"key": template.key, "reason": why})
        template.retire()
        if template.spare_timer is not None:
            template.spare_timer.cancel()
        self._spawn(self._expire(template), f"expire {template.key}")
        if template.spare is not None:
            spare, template.spare = template.spare, None
            self._spawn(self._backend.stop_instance(spare, grace_s=0.5), "stop a spare fork")
        self._changed.set()

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
        self.wanted.clear()
        fillers = [t.filling for t in self.by_key.values() if t.filling is not None]
        maker = [self._maker] if self._maker is not None else []
        for template in self.by_key.values():
            if template.spare_timer is not None:
                template.spare_timer.cancel()
        for task in [*maker, *self._making.values(), *self._watchers, *fillers]:
            task.cancel()
        await asyncio.gather(
            *maker, *self._making.values(), *self._watchers, *fillers, return_exceptions=True
        )
        await asyncio.gather(
            *(self._backend.stop_instance(s, grace_s=0.5) for s in list(self.spares)),
            return_exceptions=True,
        )
        for template in self.by_key.values():
            template.close()
