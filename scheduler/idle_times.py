"""A function's idle times as the histogram policies learn them, and the plans made from them.

One `IdleTimes` record per function holds the histogram of its idle times (1-minute bins by
default). Every histogram kind plans from the same record (`HybridHistogram.learn_from`; the live
`PolicyRouter` shares one among its three kinds), so a call updates one histogram whichever kind
decides for the function, and a kind the function does not use reads the record only when asked
(its first decision, after a switch). Each kind keeps its `Plan` for the function in the record;
a plan is stale once the histogram grew by 1 % since it was made, and `due` says at which count
of samples the first of them is, so the call path tests one integer instead of every plan.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Plan:
    """One histogram kind's plan for one function."""

    window: tuple[float, float, float]
    """(keep, start, end) in seconds after going idle: keep warm until `keep`, then (if
    `start` > `keep`) prewarm at `start` and keep until `end`."""
    share: float
    """The share of the idle times seen that fall in the window's second part."""
    due: float
    """The in-range samples at which the plan is stale (`math.inf`: stale already, its
    recomputation deferred)."""


@dataclass(slots=True, eq=False)
class IdleTimes:
    """One function's idle times: the histogram every kind plans from."""

    bins: list[int]
    in_range: int = 0
    out_of_range: int = 0
    idle_since: float | None = None
    called: bool = False
    """A call has arrived: idle times are learnt between calls only, not from an instance
    made ready before the first (the import check of a deploy, live)."""
    recent_idle_s: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    sum_of_squares: int = 0
    """Of the bin counts: the coefficient of variation in O(1)."""
    plans: dict[object, Plan] = field(default_factory=dict)
    """Each kind's plan, by a key of the policy object that made it."""
    due: float = math.inf
    """The earliest `Plan.due` of `plans`."""

    def arrive(self, now: float, bin_s: float, range_s: float) -> bool:
        """A call arrived at `now`: learn the idle time it ends. True when a plan may have
        grown stale (the histogram reached `due` samples)."""
        self.called = True
        since = self.idle_since
        if since is None:
            return False
        self.idle_since = None
        idle_s = now - since
        if idle_s < 0.0:
            idle_s = 0.0
        self.recent_idle_s.append(idle_s)
        if idle_s < range_s:
            bins = self.bins
            index = int(idle_s // bin_s)
            count = bins[index]
            self.sum_of_squares += 2 * count + 1
            bins[index] = count + 1
            self.in_range += 1
            return self.in_range >= self.due
        self.out_of_range += 1
        return False

    def replan(self, owner: object, window: tuple[float, float, float], share: float) -> Plan:
        """Store the plan of the kind keyed `owner`, made from the samples seen now."""
        plan = self.plans.get(owner)
        if plan is None:
            plan = self.plans[owner] = Plan(window, share, stale_at(self.in_range))
        else:
            plan.window, plan.share, plan.due = window, share, stale_at(self.in_range)
        self.due = min(p.due for p in self.plans.values())
        return plan

    def keep_plans(self, owners: Collection[object]) -> None:
        """Drop the plans of kinds other than `owners` (no longer used)."""
        for owner in [o for o in self.plans if o not in owners]:
            del self.plans[owner]
        self.due = min((p.due for p in self.plans.values()), default=math.inf)

    def outdate(self, plan: Plan) -> None:
        """`plan` is stale until it is made again (`replan`)."""
        plan.due = math.inf
        self.due = min(p.due for p in self.plans.values())


def stale_at(samples: int) -> int:
    """The first count of in-range samples at which a plan made at `samples` is stale: the
    histogram grew by 1 % (by one sample while it is small). A busy function goes idle after
    every call and its plan barely moves."""
    n = samples + max(1, samples // 99)
    while n - 1 > samples and n - 1 - samples >= max(1, (n - 1) // 100):
        n -= 1
    while n - samples < max(1, n // 100):
        n += 1
    return n
