"""Pool state: which instances exist, what each runs, which slots are free, who waits.

Plain objects with no I/O: every method takes the current clock time, so unit tests drive it with
a fake clock and the simulator can replay traces through it. The live scheduler turns its answers
into backend calls.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from scheduler.policy import Policy

VersionKey = tuple[str, int]
_ids = itertools.count(1)


class State(enum.Enum):
    STARTING = "starting"   # process starting, or being specialized
    GENERIC = "generic"     # running, holds no user code: ready to be specialized
    READY = "ready"         # specialized; serves calls
    STOPPING = "stopping"


@dataclass(slots=True, eq=False)
class Instance:
    id: str
    key: VersionKey | None
    state: State
    started_at: float
    concurrency: int = 1
    busy: int = 0
    calls: int = 0
    idle_since: float = 0.0
    keep_until: float = float("inf")

    @property
    def free_slots(self) -> int:
        return self.concurrency - self.busy if self.state is State.READY else 0


@dataclass(slots=True)
class Pool:
    policy: Policy
    instances: dict[str, Instance] = field(default_factory=dict)
    _by_key: dict[VersionKey, list[Instance]] = field(default_factory=dict)
    # One entry per free slot, most recently freed last: claim is O(1) and takes the most
    # recently used instance, so the others go idle and can be scaled down. Entries of
    # instances that were removed since are skipped when popped.
    _free: dict[VersionKey, list[Instance]] = field(default_factory=dict)

    def new_instance(self, now: float) -> Instance:
        """Record an instance the backend is starting (generic until specialized)."""
        instance = Instance(id=f"i{next(_ids)}", key=None, state=State.STARTING, started_at=now)
        self.instances[instance.id] = instance
        return instance

    def mark_generic(self, instance: Instance) -> None:
        instance.state = State.GENERIC

    def begin_specialize(self, instance: Instance, key: VersionKey, concurrency: int) -> None:
        instance.state = State.STARTING
        instance.key = key
        instance.concurrency = concurrency
        self._by_key.setdefault(key, []).append(instance)

    def mark_ready(self, instance: Instance, now: float) -> None:
        instance.state = State.READY
        assert instance.key is not None
        self._free.setdefault(instance.key, []).extend([instance] * instance.free_slots)
        self._went_idle(instance, now)

    def relabel(self, instance: Instance, key: VersionKey) -> None:
        if instance.key is not None:
            self._unindex(instance)
        instance.key = key
        self._by_key.setdefault(key, []).append(instance)

    def claim(self, key: VersionKey) -> Instance | None:
        """Take a free slot on a warm instance of `key`, the most recently used one first."""
        free = self._free.get(key)
        while free:
            instance = free.pop()
            if instance.state is State.READY and instance.key == key \
                    and instance.busy < instance.concurrency:
                self.occupy(instance)
                return instance
        return None

    def occupy(self, instance: Instance) -> None:
        instance.busy += 1
        instance.calls += 1
        instance.keep_until = float("inf")

    def release(self, instance: Instance, now: float) -> None:
        instance.busy -= 1
        if instance.state is State.READY and instance.id in self.instances:
            assert instance.key is not None
            self._free.setdefault(instance.key, []).append(instance)
            if instance.busy == 0:
                self._went_idle(instance, now)

    def remove(self, instance: Instance) -> None:
        if self.instances.pop(instance.id, None) is not None and instance.key is not None:
            self._unindex(instance)
        instance.state = State.STOPPING

    def count(self, key: VersionKey) -> int:
        """Instances of `key` that run or are being started."""
        return len(self._by_key.get(key, ()))

    def starting(self, key: VersionKey) -> int:
        """Slots of `key` that will become free when the instances starting now are ready."""
        return sum(i.concurrency for i in self._by_key.get(key, ()) if i.state is State.STARTING)

    def generic_ready(self) -> int:
        return sum(1 for i in self.instances.values() if i.state is State.GENERIC)

    def take_generic(self) -> Instance | None:
        for instance in self.instances.values():
            if instance.state is State.GENERIC:
                return instance
        return None

    def of_function(self, function: str) -> list[Instance]:
        return [i for k, v in self._by_key.items() if k[0] == function for i in v]

    def expired(self, now: float) -> list[Instance]:
        """Idle specialized instances whose keep-alive has run out: to be stopped now."""
        return [i for i in self.instances.values()
                if i.state is State.READY and i.busy == 0 and i.keep_until <= now]

    def next_expiry(self) -> float | None:
        times = [i.keep_until for i in self.instances.values()
                 if i.state is State.READY and i.busy == 0]
        return min(times, default=None)

    def _went_idle(self, instance: Instance, now: float) -> None:
        instance.idle_since = now
        assert instance.key is not None
        instance.keep_until = self.policy.on_idle(instance.key[0], now).keep_until

    def _unindex(self, instance: Instance) -> None:
        assert instance.key is not None
        siblings = self._by_key.get(instance.key, [])
        if instance in siblings:
            siblings.remove(instance)
        if not siblings:
            self._by_key.pop(instance.key, None)
            self._free.pop(instance.key, None)
