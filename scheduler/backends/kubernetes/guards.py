"""What keeps the pool from running wild when the cluster changes under it: pods that vanish as
fast as they are created (their owner ConfigMap was deleted, so the garbage collector deletes
each new pod), and permissions that are gone (the RoleBinding or the ServiceAccount deleted).
Plain bookkeeping; the pool makes the calls."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from scheduler.backends.kubernetes.api import (
    KubernetesError,
    Unreachable,
    check_access,
    owner_reference,
)
from scheduler.backends.kubernetes.pods import KubernetesSettings

log = logging.getLogger("ember.scheduler.kubernetes")


@dataclass(slots=True)
class Vanishing:
    """Pods deleted by someone else, and the refill's back-off while they keep vanishing."""

    window_s: float
    """Vanished pods count for this long."""
    threshold: int
    """This many vanished pods within the window and the refill backs off."""
    max_delay_s: float = 30.0
    times: collections.deque[float] = field(default_factory=collections.deque)
    delay_s: float = 0.0
    """The current back-off: 0, then 1 s doubling up to `max_delay_s`."""

    def record(self, now: float) -> None:
        self.times.append(now)

    def count(self, now: float) -> int:
        while self.times and self.times[0] < now - self.window_s:
            self.times.popleft()
        return len(self.times)

    def back_off(self, now: float) -> float:
        """How long to wait before creating pods again (0: go ahead)."""
        if self.count(now) < self.threshold:
            self.delay_s = 0.0
        else:
            self.delay_s = min(self.max_delay_s, max(1.0, self.delay_s * 2))
        return self.delay_s


class Guard:
    """The owner reference stamped on new pods, kept current; pods deleted by someone else;
    the permission check."""

    def __init__(self, api: k8s.ApiClient, settings: KubernetesSettings) -> None:
        self.api = api
        self.settings = settings
        self.owner: dict[str, Any] | None = None
        self.owner_stale = False
        """Pods vanished: read the owner again before creating more."""
        self._owner_wait_s = 0.0
        self.vanishing = Vanishing(
            window_s=settings.vanish_window_s, threshold=max(2, settings.generic_pool_size)
        )
        self.denied = asyncio.Event()
        """Set on a 401 or 403: the permissions are checked again soon."""
        self._deleted: set[str] = set()
        """Pods the pool asked to delete: any other pod that vanishes was deleted by someone
        else (by hand, an eviction, or the garbage collector when the owner is gone)."""

    async def load_owner(self) -> None:
        self.owner = await owner_reference(self.api, self.settings)

    def deleting(self, name: str) -> None:
        self._deleted.add(name)

    def gone(self, name: str) -> None:
        """A pod vanished (a DELETED event, or missing from a list)."""
        if name in self._deleted:
            self._deleted.discard(name)
            return
        self.vanishing.record(time.monotonic())
        self.owner_stale = True  # the garbage collector's doing, if the owner is gone

    async def reload_owner(self) -> bool:
        """Read the owner ConfigMap again, after pods vanished: it may be gone (the garbage
        collector would delete every pod created for it) or re-created with a new uid."""
        try:
            owner = await owner_reference(self.api, self.settings)
        except KubernetesError as exc:
            self._owner_wait_s = min(30.0, max(1.0, self._owner_wait_s * 2))
            log.error("not creating invoker pods: %s; trying again in %gs", exc, self._owner_wait_s)
            return False
        if self.owner is not None and owner["uid"] != self.owner["uid"]:
            log.warning(
                "the ConfigMap that owns the invoker pods was re-created; new pods get it as owner",
                extra={"configmap": owner["name"], "uid": owner["uid"]},
            )
        self.owner, self.owner_stale, self._owner_wait_s = owner, False, 0.0
        return True

    async def check_access_often(self) -> None:
        """Check the permissions every `access_check_s`, and soon after a 401 or 403; when
        they are gone, fail (the pool breaks and the scheduler exits) instead of retrying
        forever while it looks alive."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.access_check_s):
                    await self.denied.wait()
                await asyncio.sleep(self.settings.access_check_s / 10)  # one passing 403
            self.denied.clear()
            try:
                await check_access(self.api, self.settings)
            except Unreachable:
                continue  # the watch and the refill say so; not a matter of permissions
            except KubernetesError as exc:
                if exc.denied:
                    log.critical("the scheduler lost its permissions: %s", exc)
                    raise
                log.warning("cannot check permissions", extra={"error": str(exc)})

    async def may_create(self) -> bool:
        """Whether to create pods now; if not, after waiting: pods vanish as fast as they are
        created, or the owner ConfigMap is gone."""
        now = time.monotonic()
        delay_s = self.vanishing.back_off(now)
        if delay_s:
            log.warning(
                "invoker pods vanish as fast as they are created (%d in %gs, deleted by someone "
                "else or by the garbage collector); creating more in %gs",
                self.vanishing.count(now),
                self.vanishing.window_s,
                delay_s,
            )
        if self.owner_stale and not await self.reload_owner():
            delay_s = max(delay_s, self._owner_wait_s)
        if delay_s:
            await asyncio.sleep(delay_s)
            return False
        return True
