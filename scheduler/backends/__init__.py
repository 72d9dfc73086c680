"""Backends start and stop invoker instances; the scheduler decides when."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from invoker.specs import SpecializeSpec
    from store.records import Version


class BackendError(Exception):
    """An instance could not be started or stopped."""


class InstanceHandle(Protocol):
    host: str
    port: int

    async def wait(self) -> int | None:
        """Wait until the instance is gone; its exit code when known."""
        ...


class Backend(Protocol):
    async def start(self) -> None:
        """Get ready to start instances quickly (e.g. start the zygote)."""
        ...

    async def start_instance(
        self, instance_id: str, version: Version | None = None
    ) -> InstanceHandle:
        """Start an invoker and return once it accepts connections. `version` is the function
        version it will be specialized for, or None for the generic pool."""
        ...

    def instance_spec(self, handle: InstanceHandle, version: Version) -> SpecializeSpec:
        """Fit an instance about to be specialized to `version` (its limits) and return what
        the invoker must close around the function's code (`invoker.specs.SpecializeSpec`;
        empty where the pod is the wall)."""
        ...

    async def stop_instance(self, handle: InstanceHandle, *, grace_s: float) -> None:
        """Stop an instance: politely, then by force after `grace_s`."""
        ...

    async def relabel_instance(self, handle: InstanceHandle, version: Version) -> None:
        """An instance started for a deploy's check (version 0) now serves `version`."""
        ...

    async def close(self) -> None: ...


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
