"""The local backend's client of the zygote (`invoker.zygote`, whose docstring has the line
protocol): the readiness line of a new zygote, fork requests on its stdin, the reports read
from its stdout, and the handle of each instance it forks. The zygote is the instances'
parent: their exits arrive as reports, so a forked instance's `wait` is a future the reader
resolves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from scheduler.backends import BackendError, describe_exit
from scheduler.backends.cgroups import InstanceCgroup

log = logging.getLogger("ember.scheduler.local")  # part of the local backend


class ZygoteProcess(Protocol):
    """What the client needs of a zygote: a subprocess (the runtime's zygote), or an
    environment's zygote reached on a Unix socket (`scheduler.backends.env_zygotes`)."""

    @property
    def pid(self) -> int: ...
    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...
    @property
    def stdout(self) -> asyncio.StreamReader | None: ...
    @property
    def returncode(self) -> int | None: ...
    async def wait(self) -> int | None: ...
    def kill(self) -> None: ...


class SocketZygote:
    """A zygote reached on a Unix socket (an environment's: `scheduler.backends.env_zygotes`)
    as the client sees a process: its socket for the pipes, its handle (its parent, the
    runtime's zygote, reports its exit) for the rest."""

    def __init__(
        self, handle: ForkedHandle, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._handle = handle
        self._reader = reader
        self._writer = writer

    @property
    def pid(self) -> int:
        return self._handle.pid

    @property
    def stdin(self) -> asyncio.StreamWriter:
        return self._writer

    @property
    def stdout(self) -> asyncio.StreamReader:
        return self._reader

    @property
    def returncode(self) -> int | None:
        exited = self._handle.exited
        return (exited.result() or 0) if exited.done() else None

    async def wait(self) -> int | None:
        return await self._handle.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._handle.pid, signal.SIGKILL)
        self._writer.close()


async def first_line(process: ZygoteProcess) -> bytes:
    """What a starting invoker or zygote says first; it is killed if we stop waiting."""
    assert process.stdout is not None
    try:
        return await process.stdout.readline()
    except BaseException:  # timed out, or cancelled (shutdown): never leak it
        process.kill()
        await asyncio.shield(process.wait())
        raise


@dataclass(slots=True, eq=False)
class ForkedHandle:
    """An instance forked by the zygote, which reports its exit."""

    host: str
    port: int
    pid: int
    exited: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    cgroup: InstanceCgroup | None = None
    memory_bytes: int = 0
    """The function's --memory, once specialized (for the exit note)."""

    @property
    def exit_note(self) -> str | None:
        """Why it ended, when the cgroup knows better than the exit status."""
        if self.cgroup is not None and self.cgroup.oom_killed():
            limit = f"{self.memory_bytes >> 20} MiB" if self.memory_bytes else "its limit"
            return (
                f"out of memory (--memory {limit}, its processes and /tmp together); "
                "raise it with fn deploy --memory"
            )
        return None

    async def wait(self) -> int | None:
        return await asyncio.shield(self.exited)


_REPORT = re.compile(rb"(forked \d+ \d+ \d+|failed \S+ [^\n]*|exit \d+ -?\d+)\n")


class Zygote:
    """The zygote process and the reader of its reports. A report that is not one of the
    protocol's lines means the pipe was tampered with: the zygote is killed (and replaced on
    the next start) and the reason kept for /healthz."""

    def __init__(self, process: ZygoteProcess, capabilities: dict[str, Any]) -> None:
        self.capabilities = capabilities
        self.broken: str | None = None
        self.process = process
        self.requests: dict[str, tuple[str, asyncio.Future[ForkedHandle]]] = {}
        self.children: dict[int, ForkedHandle] = {}
        self.counter = 0
        self.reader = asyncio.create_task(self._read(), name="zygote reader")

    @classmethod
    async def ready(cls, process: ZygoteProcess) -> Zygote:
        """The client of a zygote just started, once it says it is ready (with what this host
        lets it build: `invoker.sandbox.probe`)."""
        line = await first_line(process)
        if not line.startswith(b"ready "):
            code = await process.wait()
            raise BackendError(f"the zygote failed to start ({describe_exit(code)})")
        try:
            capabilities = orjson.loads(line[len(b"ready ") :])
        except orjson.JSONDecodeError:
            capabilities = {}
        return cls(process, capabilities)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                if not _REPORT.fullmatch(raw):
                    self.broken = f"the zygote sent a malformed report ({raw[:80]!r})"
                    log.error(
                        "zygote pipe tampered with: replacing the zygote",
                        extra={"line": raw[:200].decode(errors="replace")},
                    )
                    self.process.kill()
                    break
                parts = raw.decode(errors="replace").split(maxsplit=3)
                if parts[0] == "forked" and parts[1] in self.requests:
                    address, fut = self.requests.pop(parts[1])
                    # Registered here, before the next line is read: its exit may be next.
                    handle = ForkedHandle(host=address, port=int(parts[3]), pid=int(parts[2]))
                    self.children[handle.pid] = handle
                    if fut.done():  # the caller gave up (shutdown, timeout): nobody owns it
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(handle.pid, signal.SIGKILL)
                    else:
                        fut.set_result(handle)
                elif parts[0] == "failed" and parts[1] in self.requests:
                    _, fut = self.requests.pop(parts[1])
                    if not fut.done():
                        fut.set_exception(
                            BackendError(f"zygote could not fork: {' '.join(parts[2:])}")
                        )
                elif parts[0] == "exit":
                    child = self.children.pop(int(parts[1]), None)
                    if child is not None and not child.exited.done():
                        child.exited.set_result(int(parts[2]))
        finally:
            code = await self.process.wait()
            for _, fut in self.requests.values():
                if not fut.done():
                    fut.set_exception(BackendError(f"the zygote exited ({describe_exit(code)})"))
            for handle in self.children.values():
                if not handle.exited.done():
                    handle.exited.set_result(None)
            self.children.clear()

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.reader.done()

    async def fork(self, address: str, sandbox: dict[str, Any]) -> ForkedHandle:
        return await self._request(b"fork", address, {"sandbox": sandbox})

    async def fork_zygote(
        self, address: str, path: str, modules: list[str], *, timeout_s: float = 0
    ) -> ForkedHandle:
        """Fork an environment's zygote that imports `modules` from `path` and listens on
        `address` (`invoker.env_zygote`); its handle once it has imported them (killed if
        that takes over `timeout_s`, when given)."""
        return await self._request(
            b"zygote", address, {"path": path, "modules": modules, "timeout_s": timeout_s}
        )

    async def _request(self, verb: bytes, address: str, fields: dict[str, Any]) -> ForkedHandle:
        assert self.process.stdin is not None
        self.counter += 1
        request_id = str(self.counter)
        fut: asyncio.Future[ForkedHandle] = asyncio.get_running_loop().create_future()
        self.requests[request_id] = (address, fut)
        request = orjson.dumps({"address": address, **fields})
        self.process.stdin.write(b"%s %s %s\n" % (verb, request_id.encode(), request))
        return await fut

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self.reader
