"""Pool state: which instances exist, what each runs, which slots are free, who waits.

Plain objects with no I/O: every method takes the current clock time, so unit tests drive it with
a fake clock and the simulator can replay traces through it. The live scheduler turns its answers
into backend calls.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field

from scheduler.policy import Policy

VersionKey = tuple[str, int]
_ids = itertools.count(1)


class State(enum.Enum):
    STARTING = "starting"  # process starting, or being specialized
    GENERIC = "generic"  # running, holds no user code: ready to be specialized
    READY = "ready"  # specialized; serves calls
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
    prewarmed: bool = False
    """Started ahead of an expected call; no call has used it yet."""

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
    prewarms: list[tuple[float, float, VersionKey]] = field(default_factory=list)
    """(at, until, key) the policy asked for, as a heap: the scheduler starts them when due.
    Only the latest request per key counts (`_prewarm_for`); older heap entries are skipped."""
    _prewarm_for: dict[VersionKey, tuple[float, float]] = field(default_factory=dict)
    idle_s: dict[str, float] = field(default_factory=dict)
    """Seconds specialized instances spent warm and idle, per function."""
    prewarm_outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    """(function, "used" | "wasted") -> count."""

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

    def mark_ready(self, instance: Instance, now: float, *, for_call: bool = False) -> None:
        """The instance is specialized. `for_call`: a waiting call takes it now, so it is not
        idle and the policy is not asked (it would learn an idle time that never was); if no
        call took it after all, `settle` asks."""
        instance.state = State.READY
        assert instance.key is not None
        self._free.setdefault(instance.key, []).extend([instance] * instance.free_slots)
        if for_call:
            instance.idle_since = now
        else:
            self._went_idle(instance, now)

    def settle(self, instance: Instance, now: float) -> None:
        """An instance made ready for a call that no call took: idle from now."""
        if instance.busy == 0 and instance.state is State.READY:
            self._went_idle(instance, now)

    def relabel(self, instance: Instance, key: VersionKey) -> None:
        if instance.key is not None:
            self._unindex(instance)
        instance.key = key
        self._by_key.setdefault(key, []).append(instance)

    def claim(self, key: VersionKey, now: float | None = None) -> Instance | None:
        """Take a free slot on a warm instance of `key`, the most recently used one first."""
        free = self._free.get(key)
        while free:
            instance = free.pop()
            if (
                instance.state is State.READY
                and instance.key == key
                and instance.busy < instance.concurrency
            ):
                self.occupy(instance, now)
                return instance
        return None

    def occupy(self, instance: Instance, now: float | None = None) -> None:
        if instance.busy == 0 and instance.key is not None and now is not None:
            self._count_idle(instance, now)
        if instance.prewarmed:
            instance.prewarmed = False
            self._outcome(instance, "used")
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

    def mark_prewarmed(self, instance: Instance, now: float, keep_until: float) -> None:
        """A prewarmed instance is ready: kept until `keep_until` unless a call comes."""
        instance.state = State.READY
        instance.prewarmed = True
        assert instance.key is not None
        self._free.setdefault(instance.key, []).extend([instance] * instance.free_slots)
        instance.idle_since = now
        instance.keep_until = keep_until

    def stopped(self, instance: Instance, now: float) -> None:
        """Account for an idle instance the scheduler stops now (keep-alive ran out)."""
        if instance.key is not None and instance.busy == 0 and instance.state is State.READY:
            self._count_idle(instance, now)
            if instance.prewarmed:
                self._outcome(instance, "wasted")

    def _count_idle(self, instance: Instance, now: float) -> None:
        assert instance.key is not None
        function = instance.key[0]
        self.idle_s[function] = self.idle_s.get(function, 0.0) + max(0.0, now - instance.idle_since)

    def _outcome(self, instance: Instance, outcome: str) -> None:
        assert instance.key is not None
        k = (instance.key[0], outcome)
        self.prewarm_outcomes[k] = self.prewarm_outcomes.get(k, 0) + 1

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
        return [
            i
            for i in self.instances.values()
            if i.state is State.READY and i.busy == 0 and i.keep_until <= now
        ]

    def next_expiry(self) -> float | None:
        times = [
            i.keep_until for i in self.instances.values() if i.state is State.READY and i.busy == 0
        ]
        return min(times, default=None)

    def _went_idle(self, instance: Instance, now: float) -> None:
        instance.idle_since = now
        assert instance.key is not None
        decision = self.policy.on_idle(instance.key[0], now)
        instance.keep_until = decision.keep_until
        if decision.prewarm_at is not None:
            until = (
                decision.prewarm_until
                if decision.prewarm_until is not None
                else decision.prewarm_at
            )
            self._prewarm_for[instance.key] = (decision.prewarm_at, until)
            heapq.heappush(self.prewarms, (decision.prewarm_at, until, instance.key))
        else:
            self._prewarm_for.pop(instance.key, None)  # a newer decision replaces it

    def due_prewarms(self, now: float) -> list[tuple[float, VersionKey]]:
        """Prewarms whose time has come, as (keep until, key)."""
        due = []
        while self.prewarms and self.prewarms[0][0] <= now:
            at, until, key = heapq.heappop(self.prewarms)
            if self._prewarm_for.get(key) != (at, until):
                continue  # replaced by a later decision, or cancelled
            del self._prewarm_for[key]
            if until > now:
                due.append((until, key))
        return due

    def cancel_prewarms(self, function: str) -> None:
        for key in [k for k in self._prewarm_for if k[0] == function]:
            del self._prewarm_for[key]

    def forget(self, function: str) -> None:
        """Drop what is kept about a deleted function."""
        self.cancel_prewarms(function)
        self.idle_s.pop(function, None)
        for key in [k for k in self.prewarm_outcomes if k[0] == function]:
            del self.prewarm_outcomes[key]

    def next_prewarm(self) -> float | None:
        return self.prewarms[0][0] if self.prewarms else None

    def _unindex(self, instance: Instance) -> None:
        assert instance.key is not None
        siblings = self._by_key.get(instance.key, [])
        if instance in siblings:
            siblings.remove(instance)
        if not siblings:
            self._by_key.pop(instance.key, None)
            self._free.pop(instance.key, None)
