"""The local backend: invoker instances are child processes on this machine.

Each instance is `python -m invoker` in its own session, with a scrubbed environment (no database
URL, no token: user code never sees platform credentials). It exits when its stdin closes, so
instances never outlive the platform, even after a SIGKILL of the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass

from scheduler.backends import BackendError, InstanceHandle, describe_exit

log = logging.getLogger("ember.scheduler.local")

# Only what a Python process needs to run; everything else of the platform's environment
# (DATABASE_URL, FN_TOKEN, cloud credentials...) stays out of user code's reach.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH")


def invoker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env["MALLOC_ARENA_MAX"] = "2"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HOME"] = "/tmp"
    return env


@dataclass(slots=True, eq=False)
class LocalHandle:
    host: str
    port: int
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int | None:
        return await self.process.wait()


class LocalBackend:
    def __init__(self, *, start_timeout_s: float = 10.0, python: str = sys.executable) -> None:
        self.start_timeout_s = start_timeout_s
        self.python = python
        self._handles: set[LocalHandle] = set()

    async def start_instance(self, instance_id: str) -> LocalHandle:
        try:
            process = await asyncio.create_subprocess_exec(
                self.python, "-m", "invoker", "--host", "127.0.0.1", "--port", "0",
                "--exit-with-stdin",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=invoker_env(), start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start an invoker process: {exc}") from exc
        assert process.stdout is not None
        try:
            async with asyncio.timeout(self.start_timeout_s):
                line = await process.stdout.readline()
        except BaseException as exc:  # timed out, or cancelled (shutdown): never leak it
            process.kill()
            await asyncio.shield(process.wait())
            if isinstance(exc, TimeoutError):
                raise BackendError(
                    f"invoker {instance_id} did not start within {self.start_timeout_s}s"
                ) from None
            raise
        if not line.strip().isdigit():
            code = await process.wait()
            raise BackendError(f"invoker {instance_id} failed to start ({describe_exit(code)})")
        handle = LocalHandle(host="127.0.0.1", port=int(line), process=process)
        self._handles.add(handle)
        log.debug("instance started", extra={"instance": instance_id, "pid": process.pid})
        return handle

    async def stop_instance(self, handle: InstanceHandle, *, grace_s: float = 2.0) -> None:
        assert isinstance(handle, LocalHandle)
        self._handles.discard(handle)
        process = handle.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(grace_s):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.stdin is not None:
            process.stdin.close()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_instance(h, grace_s=1.0) for h in list(self._handles)))
