"""The node's capacity: how many instances, and how much instance memory, may run at once.

Every instance is charged what it may use: a specialized one its function's memory limit, a
generic one `GENERIC_MEMORY_BYTES`. When a call needs a new instance and the node is full, the
scheduler evicts the idle instance the policy values least (`eviction_order`): the one whose
keep-alive ends first, then the one idle longest. Instances kept for `min_warm` and busy ones are
never evicted; prewarms and `min_warm` only start instances into free room.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from scheduler.pool import Instance, State

GENERIC_MEMORY_BYTES = 32 << 20
"""What a generic instance is charged: an idle interpreter (measured PSS is about 9 MB)."""
AUTO_MEMORY_SHARE = 0.75
"""Without FN_MAX_INSTANCES_MEMORY: this share of the machine's (or the platform's cgroup's)
memory."""
AUTO_BYTES_PER_INSTANCE = 64 << 20
"""Without FN_MAX_INSTANCES_TOTAL: one instance per this much of the memory cap."""


@dataclass(slots=True, frozen=True)
class Capacity:
    max_instances: int
    max_memory_bytes: int

    @classmethod
    def resolve(cls, max_instances: int, max_memory_bytes: int) -> Capacity:
        """The caps to apply; 0 for either means: from this machine's memory."""
        memory = max_memory_bytes or int(available_memory_bytes() * AUTO_MEMORY_SHARE)
        instances = max_instances or max(4, memory // AUTO_BYTES_PER_INSTANCE)
        return cls(max_instances=instances, max_memory_bytes=memory)

    def describe(self) -> str:
        return f"{self.max_instances} instances, {self.max_memory_bytes / (1 << 20):.0f} MiB"


def available_memory_bytes() -> int:
    """The machine's memory, or the memory limit of the cgroup this process runs in if lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(total, _cgroup_limit_bytes() or total)


def _cgroup_limit_bytes() -> int | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            candidate = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max"
        elif "memory" in controllers.split(","):
            candidate = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"
        else:
            continue
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(text)
    return None


def eviction_order(instances: Iterable[Instance], exclude: object = None) -> list[Instance]:
    """Idle specialized instances that may be evicted, the least valued first."""
    candidates = [
        i
        for i in instances
        if i.state is State.READY
        and i.busy == 0
        and i.key is not None
        and i.key != exclude
        and i.keep_until != math.inf  # kept for min_warm on purpose
    ]
    return sorted(candidates, key=lambda i: (i.keep_until, i.idle_since))


class Room:
    """Whether one more instance fits on the node, and which idle ones to evict so it does."""

    def __init__(
        self,
        capacity: Capacity,
        instances: dict[str, Instance],
        charge: Callable[[Instance], int],
        usage: Callable[[], tuple[int, int]],
    ) -> None:
        self.capacity = capacity
        self._instances = instances
        self._charge = charge
        self.usage = usage
        """Instances on the node and the memory they are charged: every one until the backend
        has stopped it (also those out of the pool: evicted, or a deleted function's busy)."""

    def victims_for(
        self, memory_bytes: int, key: object, *, generic: Instance | None, evict: bool
    ) -> list[Instance] | None:
        """What to evict so that an instance of `key` charged `memory_bytes` fits (empty: it
        fits now), specializing `generic` if one is given; None: it cannot fit."""
        count, memory = self.usage()
        if generic is None:
            count += 1
        else:
            memory -= self._charge(generic)
        memory += memory_bytes
        victims: list[Instance] = []
        candidates = iter(eviction_order(self._instances.values(), key) if evict else ())
        while count > self.capacity.max_instances or memory > self.capacity.max_memory_bytes:
            victim = next(candidates, None)
            if victim is None:
                return None
            victims.append(victim)
            count -= 1
            memory -= self._charge(victim)
        return victims

    def generic_fits(self) -> bool:
        count, memory = self.usage()
        return (
            count < self.capacity.max_instances
            and memory + GENERIC_MEMORY_BYTES <= self.capacity.max_memory_bytes
        )
