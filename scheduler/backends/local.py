"""The local backend: invoker instances are processes on this machine.

By default instances are forked by a zygote (`python -m invoker --zygote`) that has imported the
runtime once: a start costs a fork (~2 ms) and shares the runtime's memory. With `zygote=False`
each instance is a fresh `python -m invoker` (~100 ms), the baseline the benchmark compares with.

Every process starts with a scrubbed environment (no database URL, no token: user code never
sees platform credentials), and nothing outlives the platform: the zygote and spawned instances
exit when their stdin (a pipe from us) closes, forked instances die with the zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.backends import BackendError, InstanceHandle, describe_exit
from store.records import Version

log = logging.getLogger("ember.scheduler.local")

# Only what a Python process needs to run; everything else of the platform's environment
# (DATABASE_URL, FN_TOKEN, cloud credentials...) stays out of user code's reach.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH")


def invoker_env(tmp_dir: str | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    if tmp_dir is not None:
        env["TMPDIR"] = tmp_dir  # instances put their code here: removed with them
    env["MALLOC_ARENA_MAX"] = "2"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HOME"] = "/tmp"
    return env


async def _first_line(process: asyncio.subprocess.Process) -> bytes:
    """What a starting invoker or zygote says first; it is killed if we stop waiting."""
    assert process.stdout is not None
    try:
        return await process.stdout.readline()
    except BaseException:  # timed out, or cancelled (shutdown): never leak it
        process.kill()
        await asyncio.shield(process.wait())
        raise


def _exited(handle: ForkedHandle | LocalHandle) -> bool:
    if isinstance(handle, LocalHandle):
        return handle.process.returncode is not None
    return handle.exited.done()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _remove_code_dirs(folder: str, pid: int) -> None:
    for code_dir in Path(folder).glob(f"ember-fn-{pid}-*"):
        shutil.rmtree(code_dir, ignore_errors=True)


def _remove_dirs_of_dead_platforms() -> None:
    """A platform killed with SIGKILL leaves its socket directory (and its instances' code):
    the next one removes the directories of platforms whose process is gone."""
    for folder in Path(tempfile.gettempdir()).glob("ember-*-*"):
        owner = folder.name.split("-")[1]
        if not owner.isdigit() or not folder.is_dir():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


@dataclass(slots=True, eq=False)
class LocalHandle:
    """An instance we spawned ourselves: we are its parent."""

    host: str
    port: int
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int | None:
        return await self.process.wait()


@dataclass(slots=True, eq=False)
class ForkedHandle:
    """An instance forked by the zygote, which reports its exit."""

    host: str
    port: int
    pid: int
    exited: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    async def wait(self) -> int | None:
        return await asyncio.shield(self.exited)


class _Zygote:
    """The zygote process and the reader of its reports."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.requests: dict[str, tuple[str, asyncio.Future[ForkedHandle]]] = {}
        self.children: dict[int, ForkedHandle] = {}
        self.counter = 0
        self.reader = asyncio.create_task(self._read(), name="zygote reader")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                parts = raw.decode().split(maxsplit=3)
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
                            BackendError(f"zygote could not fork: {' '.join(parts[2:])}"))
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

    async def fork(self, address: str) -> ForkedHandle:
        assert self.process.stdin is not None
        self.counter += 1
        request_id = str(self.counter)
        fut: asyncio.Future[ForkedHandle] = asyncio.get_running_loop().create_future()
        self.requests[request_id] = (address, fut)
        self.process.stdin.write(f"fork {request_id} {address}\n".encode())
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


class LocalBackend:
    def __init__(self, *, zygote: bool = True, unix_sockets: bool = True,
                 start_timeout_s: float = 10.0, python: str = sys.executable) -> None:
        self.use_zygote = zygote
        # Instances listen on Unix sockets in a directory only we can enter (mode 0700):
        # cheaper than TCP over loopback, and no other local user can reach user code.
        if unix_sockets:
            _remove_dirs_of_dead_platforms()
        self._socket_dir = tempfile.mkdtemp(prefix=f"ember-{os.getpid()}-") \
            if unix_sockets else None
        self.start_timeout_s = start_timeout_s
        self.python = python
        self._handles: set[InstanceHandle] = set()
        self._zygote: _Zygote | None = None
        self._zygote_lock = asyncio.Lock()

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.process.pid if self._zygote is not None else None

    async def start(self) -> None:
        if self.use_zygote:
            await self._ensure_zygote()

    async def start_instance(self, instance_id: str,
                             version: Version | None = None) -> InstanceHandle:
        handle: InstanceHandle
        try:
            async with asyncio.timeout(self.start_timeout_s):
                address = "127.0.0.1" if self._socket_dir is None \
                    else f"unix:{self._socket_dir}/{instance_id}.sock"
                if self.use_zygote:
                    zygote = await self._ensure_zygote()
                    handle = await zygote.fork(address)
                else:
                    handle = await self._spawn(instance_id, address)
        except TimeoutError:
            raise BackendError(
                f"invoker {instance_id} did not start within {self.start_timeout_s:g}s"
            ) from None
        self._handles.add(handle)
        return handle

    async def _ensure_zygote(self) -> _Zygote:
        async with self._zygote_lock:
            if self._zygote is not None and self._zygote.alive:
                return self._zygote
            if self._zygote is not None:
                log.warning("the zygote is gone; starting a new one")
            process = await self._start_process("--zygote")
            line = await _first_line(process)
            if line != b"ready\n":
                code = await process.wait()
                raise BackendError(f"the zygote failed to start ({describe_exit(code)})")
            self._zygote = _Zygote(process)
            log.info("zygote started", extra={"pid": process.pid})
            return self._zygote

    async def _start_process(self, *args: str) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                self.python, "-m", "invoker", *args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=invoker_env(self._socket_dir), start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start an invoker process: {exc}") from exc

    async def _spawn(self, instance_id: str, address: str) -> LocalHandle:
        process = await self._start_process("--host", address, "--port", "0",
                                            "--exit-with-stdin")
        line = await _first_line(process)
        if not line.strip().isdigit():
            code = await process.wait()
            raise BackendError(f"invoker {instance_id} failed to start ({describe_exit(code)})")
        return LocalHandle(host=address, port=int(line), process=process)

    async def stop_instance(self, handle: InstanceHandle, *, grace_s: float = 2.0) -> None:
        try:
            await self._stop(handle, grace_s)
        except BaseException:
            raise  # still in _handles: close() stops it
        else:
            self._handles.discard(handle)
        finally:
            if handle.host.startswith("unix:"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(handle.host[len("unix:"):])
            pid = handle.pid if isinstance(handle, ForkedHandle | LocalHandle) else None
            if self._socket_dir is not None and pid is not None:
                _remove_code_dirs(self._socket_dir, pid)

    async def _stop(self, handle: InstanceHandle, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after `grace_s`, to the instance's whole process group: what
        a handler forked goes with it (unless it left the group on purpose)."""
        assert isinstance(handle, ForkedHandle | LocalHandle)
        if not _exited(handle):
            _signal_group(handle.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace_s):
                    await handle.wait()
            except TimeoutError:
                _signal_group(handle.pid, signal.SIGKILL)
                try:
                    async with asyncio.timeout(5.0):
                        await handle.wait()
                except TimeoutError:
                    log.error("instance did not exit after SIGKILL", extra={"pid": handle.pid})
        _signal_group(handle.pid, signal.SIGKILL)  # what the handler left running
        if isinstance(handle, LocalHandle):
            # Close its pipes (reading stdout to EOF closes that one): an open pipe transport
            # would be left for the event loop to warn about and clean up at close.
            if handle.process.stdin is not None:
                handle.process.stdin.close()
            if handle.process.stdout is not None:
                with contextlib.suppress(TimeoutError, OSError):
                    async with asyncio.timeout(1.0):
                        await handle.process.stdout.read()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_instance(h, grace_s=1.0) for h in list(self._handles)))
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
