"""Backends start and stop invoker instances; the scheduler decides when."""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

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


@runtime_checkable
class TemplateBackend(Protocol):
    """A backend that keeps function templates (`scheduler.backends.templates`): once a
    version earned one, its next instances are forked from it, imported already."""

    def keep_template(
        self,
        version: Version,
        meta: Mapping[str, object],
        code: bytes,
        *,
        keep_alive_s: float,
        fits: Callable[[], bool],
    ) -> None:
        """`version` was specialized with `meta` and `code` and earned a template: make it if
        it has none (in the background, off the request path, when `fits()` says the node
        has room); it keeps a spare fork while it forked within `keep_alive_s`."""
        ...

    def has_template(self, version: Version) -> bool: ...

    def drop_templates(self, function: str, keep_version: int | None = None) -> int:
        """Retire the function's templates but `keep_version`'s; with no function, every one;
        returns how many."""
        ...

    def give_template_room(self) -> bool:
        """Free one instance's room (a spare fork, else the least recently used template);
        False if there was nothing to free."""
        ...

    def template_usage(self) -> tuple[int, int]:
        """Templates on the node and the memory they are charged (their PSS)."""
        ...


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
