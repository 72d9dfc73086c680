"""In-memory instances and a fake clock, to run the scheduler without processes (unit tests).

`FakeBackend` is a `Backend` whose instances are records: starting one takes no time, a
connection to it answers the invoker protocol's `specialize`, `relabel` and `invoke` at once (or
fails, or hangs, as a test asks), and `crash` ends one as a killed process would. `FakeClock` is
the scheduler's clock; `advance` moves it, then `Scheduler.tick` lets the reaper see the new time.

    clock = FakeClock()
    backend = FakeBackend()
    scheduler = Scheduler(backend, settings, clock=clock, connect=backend.connect)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from dataclasses import dataclass, field
from typing import Any

from invoker.protocol import Reply, Request
from invoker.specs import SpecializeSpec
from scheduler.backends import BackendError, InstanceHandle
from store.records import FunctionConfig, Version


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(eq=False)
class FakeInstance:
    """One instance of the fake backend (its `InstanceHandle`)."""

    id: str
    version: Version | None
    host: str = "fake"
    port: int = 0
    function: str | None = None
    """The function it was specialized with."""
    calls: int = 0
    exited: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    async def wait(self) -> int | None:
        return await asyncio.shield(self.exited)

    def crash(self, code: int = -signal.SIGKILL) -> None:
        """End the instance as a process killed by a signal would end."""
        if not self.exited.done():
            self.exited.set_result(code)

    @property
    def alive(self) -> bool:
        return not self.exited.done()


class FakeConnection:
    def __init__(self, backend: FakeBackend, instance: FakeInstance) -> None:
        self._backend = backend
        self._instance = instance
        self.closed = False

    @property
    def usable(self) -> bool:
        return not self.closed and self._instance.alive

    def close(self) -> None:
        self.closed = True

    async def call(
        self, meta: Request, body: bytes = b"", *, timeout_s: float | None = None
    ) -> tuple[Reply, bytes]:
        async with asyncio.timeout(timeout_s):
            return await self._call(meta, body)

    async def _call(self, meta: Request, body: bytes) -> tuple[Reply, bytes]:
        if not self.usable:
            self.close()
            raise ConnectionResetError("connection to the instance is closed")
        instance, backend = self._instance, self._backend
        if meta["op"] == "specialize":
            function = meta["function"]
            if function in backend.hang_imports:
                await asyncio.Event().wait()  # never answers: the caller's timeout ends it
            error = backend.import_errors.get(function)
            if error is not None:
                return {"ok": False, "error": {"type": "ImportError", "message": error}}, b""
            instance.function = function
            backend.specialized.append((instance.id, function))
            return {"ok": True, "import_cpu_ms": backend.import_cpu_ms}, b""
        if meta["op"] == "relabel":
            return {"ok": True}, b""
        if meta["op"] == "invoke":
            instance.calls += 1
            return {"ok": True, "status": 200}, body
        return {
            "ok": False,
            "error": {"type": "ProtocolError", "message": f"op {meta['op']!r}"},
        }, b""


class FakeBackend:
    """A `Backend` of in-memory instances; what happened is kept for the test to check."""

    def __init__(self) -> None:
        self.instances: dict[str, FakeInstance] = {}
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.specialized: list[tuple[str, str]] = []
        """(instance id, function) in the order of specialization."""
        self.import_errors: dict[str, str] = {}
        """Functions whose import fails, with the error's message."""
        self.hang_imports: set[str] = set()
        """Functions whose import never ends."""
        self.fail_starts = 0
        """How many of the next starts fail (`BackendError`)."""
        self.import_cpu_ms = 1.0
        """The CPU time every import says it took."""
        self.closed = False

    async def start(self) -> None:
        pass

    async def start_instance(
        self, instance_id: str, version: Version | None = None
    ) -> InstanceHandle:
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise BackendError("no room for another instance")
        instance = FakeInstance(instance_id, version)
        self.instances[instance_id] = instance
        self.started.append(instance_id)
        return instance

    def instance_spec(self, handle: InstanceHandle, version: Version) -> SpecializeSpec:
        return {}

    async def relabel_instance(self, handle: InstanceHandle, version: Version) -> None:
        """Nothing outside the process names its version."""

    async def stop_instance(self, handle: InstanceHandle, *, grace_s: float) -> None:
        assert isinstance(handle, FakeInstance)
        if handle.alive:
            handle.crash(0)
        self.stopped.append(handle.id)

    async def close(self) -> None:
        self.closed = True

    async def connect(self, handle: InstanceHandle, max_body_bytes: int) -> FakeConnection:
        assert isinstance(handle, FakeInstance)
        if not handle.alive:
            raise ConnectionRefusedError(f"instance {handle.id} is not running")
        return FakeConnection(self, handle)

    def running(self) -> list[FakeInstance]:
        return [i for i in self.instances.values() if i.alive]


def fake_version(function: str = "resize", version: int = 1, **config: Any) -> Version:
    """A function version for the fake backend (its source is never run)."""
    return Version(
        function=function,
        version=version,
        source="def handler(event, context):\n    return event\n",
        sha256="",
        filename=f"{function}.py",
        config=FunctionConfig(**config),
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
