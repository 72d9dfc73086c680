"""A template process as the platform sees it (`scheduler.backends.templates` keeps them): the
reader of its reports, which come from a process that ran the function's code and are trusted
with nothing, and the forks it is asked for, each moved into a cgroup before it may serve."""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

from scheduler.backends import BackendError
from scheduler.backends.zygote import ForkedHandle

if TYPE_CHECKING:
    from store.records import Version

log = logging.getLogger("ember.scheduler.local")

TemplateKey = tuple[str, int]

_REPORT = re.compile(r"forked \S+ \d{1,9}|failed \S+ .+|exit \d{1,9} -?\d{1,9}")
MAX_REPORT_BYTES = 4096
UNMEASURED_BYTES = 32 << 20
"""What a template is charged until its PSS is measured."""


def template_pss_bytes(pid: int) -> int:
    """The PSS of a template's processes (its namespace's init and the template)."""
    total = 0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += process.memory_full_info().pss
    return total


def cgroup_bytes(handle: ForkedHandle) -> int:
    """What a template or spare holds now: its code runs (at-fork hooks, signal handlers) and
    can grow after its PSS was measured."""
    return handle.cgroup.memory_bytes() if handle.cgroup is not None else 0


def fork_gone(handle: ForkedHandle) -> bool:
    """The fork has exited, as the platform sees it (its cgroup is empty)."""
    if handle.cgroup is not None:
        return handle.cgroup.empty()
    return handle.exited.done()


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def move_into(pid: int, procs: list[str]) -> None:
    """Move a process into a cgroup (each of its `cgroup.procs` files)."""
    for path in procs:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)


async def _peer_pid(sock: socket.socket) -> int:
    """The pid (in our PID namespace) of the process that sends the first byte on `sock`."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    while True:
        try:
            data, ancdata, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(12))
            break
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock.fileno(), _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(sock.fileno())
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid: int = struct.unpack("3i", payload[:12])[0]
            if data == b"r":
                return pid
    raise BackendError("the template's fork exited before it was ready")


@dataclass(slots=True, eq=False)
class Template:
    """One version's template process and the reader of its reports."""

    key: TemplateKey
    version: Version
    """Its forks' limits are this version's from the start."""
    handle: ForkedHandle
    control: socket.socket
    charge_bytes: int = UNMEASURED_BYTES
    retired: bool = False
    forks: dict[str, asyncio.Future[ForkedHandle]] = field(default_factory=dict)
    children: dict[int, ForkedHandle] = field(default_factory=dict)
    """By pid in the template's namespace."""
    counter: int = 0
    pending: bytes = b""
    spare: ForkedHandle | None = None
    """A fork made ahead, in its cgroup and listening: the next cold start takes it."""
    spare_bytes: int = 0
    handed: list[ForkedHandle] = field(default_factory=list)
    """The forks the platform moved into cgroups (what the template says of them is not
    trusted: a retired template is stopped once these are gone)."""
    filling: asyncio.Task[None] | None = None
    used_at: float = 0.0
    """When it last forked an instance or one of those exited (or it was made): the least
    recently used one is retired first."""
    spare_keep_s: float = 0.0
    """How long it keeps a spare once no fork of it runs (the function's keep-alive, at least
    `templates.SPARE_MIN_KEEP_S`)."""
    spare_timer: asyncio.TimerHandle | None = None

    def start_reading(self) -> None:
        self.control.setblocking(False)
        asyncio.get_running_loop().add_reader(self.control.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.control.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines if len(self.pending) <= MAX_REPORT_BYTES else [b"(too long)"]:
            text = line.decode(errors="replace")
            parts = text.split(maxsplit=2)
            if not _REPORT.fullmatch(text):  # from user code's process: trusted with nothing
                log.error("template sent a malformed report", extra={"line": line[:200].hex()})
                self.close()
                return
            if parts[0] == "forked" and parts[1] in self.forks:
                handle = ForkedHandle(host="", port=0, pid=0)
                self.children[int(parts[2])] = handle
                fut = self.forks.pop(parts[1])
                if not fut.done():
                    fut.set_result(handle)
            elif parts[0] == "failed" and parts[1] in self.forks:
                fut = self.forks.pop(parts[1])
                if not fut.done():
                    fut.set_exception(BackendError(f"the template could not fork: {parts[2]}"))
            elif parts[0] == "exit":
                child = self.children.pop(int(parts[1]), None)
                if child is not None and not child.exited.done():
                    child.exited.set_result(int(parts[2]))

    @property
    def alive(self) -> bool:
        return self.control.fileno() >= 0 and not self.handle.exited.done()

    def close(self) -> None:
        """The template is gone, or told us nonsense (then it goes): its forks go with its
        namespace."""
        if not self.handle.exited.done():
            with contextlib.suppress(OSError):
                os.killpg(self.handle.pid, signal.SIGKILL)
        if self.control.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            self.control.close()
        for fut in self.forks.values():
            if not fut.done():
                fut.set_exception(BackendError("the template exited"))
        self.forks.clear()
        for child in self.children.values():
            if not child.exited.done():
                child.exited.set_result(None)
        self.children.clear()

    async def fork(self, address: str) -> tuple[ForkedHandle, socket.socket]:
        """A new instance listening on `address` (unix:), and the socket to say go on once
        it is in its cgroup."""
        path = address.removeprefix("unix:")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mine, theirs = socket.socketpair()
        try:
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(128)
            mine.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self.counter += 1
            request_id = str(self.counter)
            fut = asyncio.get_running_loop().create_future()
            self.forks[request_id] = fut
            fds = array.array("i", [listener.fileno(), theirs.fileno()])
            self.control.sendmsg(
                [b"fork %s\n" % request_id.encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())],
            )
        except OSError as exc:
            mine.close()
            raise BackendError(f"cannot ask the template for a fork: {exc}") from exc
        finally:
            listener.close()
            theirs.close()
        try:
            handle = await fut
            handle.pid = await _peer_pid(mine)
        except BaseException:
            mine.close()
            raise
        handle.host = address
        return handle, mine

    def retire(self) -> None:
        self.retired = True
        with contextlib.suppress(OSError):
            self.control.send(b"retire\n")
