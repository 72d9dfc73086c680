"""Timer detection: the minute of a function's next call, when its calls repeat at a period.

Many functions are driven by timers (CRON schedules: every 5, 15 or 60 minutes, at fixed
minutes), often with other calls in between. Their idle times are spread (a burst after one
firing shortens the next gap), but the minutes of their calls are not: a function called in
minutes m - P, m - 2P (and m - kP for `repeats` of them) is likely to be called in minute m.
`TimerDetector` keeps, per function, the minutes with calls (a bit set over the last
`HISTORY_MIN` minutes) and predicts the earliest such minute after the last call, over the
periods that CRON schedules use (`PERIODS_MIN`: divisors of an hour and of a day, up to 12 h).

It also keeps score: a prediction is a hit when the next call comes in the predicted minute, a
miss when the minute passes without one (a call before it says nothing), so a policy uses the
prediction only where it has paid. Each prediction is a handful of big-integer operations per
period: O(periods), independent of how many calls the function had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PERIODS_MIN = (2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720)
"""Candidate periods in minutes: those of CRON schedules (divisors of 60 and of 1,440). Not
one minute: a function called every minute is kept warm by any keep-alive."""

HISTORY_MIN = 1440 + 60
"""Minutes of calls remembered: enough for `repeats` x the longest period's firings."""


@dataclass(slots=True)
class _Calls:
    minutes: int = 0
    """Bit i: a call arrived in minute `base` + i."""
    base: int = 0
    last: int = -1
    """The last minute with a call (absolute)."""
    predicted: tuple[float, float] | None = None
    """The window of the last prediction, until a call scores it."""
    hits: int = 0
    misses: int = 0
    cached: tuple[int, int | None] = (-1, None)
    """(`after`, the offset found from it) of the last search, until a minute is added."""


@dataclass(slots=True)
class TimerDetector:
    """Per function: the calls' minutes, the next predicted one, and the predictions' score."""

    minute_s: float = 60.0
    repeats: int = 3
    """Earlier firings a prediction needs: minute m is predicted when m - P, ..., m - repeats x P
    all had calls."""
    periods_min: tuple[int, ...] = PERIODS_MIN
    _functions: dict[str, _Calls] = field(default_factory=dict)

    def on_arrival(self, function: str, now: float) -> None:
        calls = self._functions.get(function)
        minute = math.floor(now / self.minute_s)
        if calls is None:
            calls = self._functions[function] = _Calls(base=minute)
        if calls.predicted is not None:
            start, end = calls.predicted
            if start <= now < end:
                calls.hits += 1
            elif now >= end:
                calls.misses += 1
            calls.predicted = None
        if minute > calls.last:
            if minute - calls.base >= 2 * HISTORY_MIN:  # drop what is older than the history
                shift = minute - HISTORY_MIN - calls.base
                calls.minutes >>= shift
                calls.base += shift
            calls.minutes |= 1 << (minute - calls.base)
            calls.last = minute
            calls.cached = (-1, None)

    def predict(self, function: str, now: float) -> tuple[float, float] | None:
        """The window (start, end) of the earliest minute after the last call that repeats a
        period, recorded for scoring; None when no period repeats."""
        calls = self._functions.get(function)
        if calls is None or calls.last < 0:
            return None
        after = max(calls.last, math.floor(now / self.minute_s) - 1) - calls.base + 1
        if calls.cached[0] == after:  # a busy function goes idle many times a minute
            best = calls.cached[1]
        else:
            best = self._earliest(calls.minutes, after)
            calls.cached = (after, best)
        if best is None:
            calls.predicted = None
            return None
        start = (calls.base + after + best) * self.minute_s
        calls.predicted = (start, start + self.minute_s)
        return calls.predicted

    def _earliest(self, bits: int, after: int) -> int | None:
        """The offset from bit `after` of the first bit whose minute repeats a period."""
        best: int | None = None
        for period in self.periods_min:
            # Only the minutes from `repeats` periods before `after` to one period after it.
            low = after - self.repeats * period
            part = bits >> low if low >= 0 else bits << -low
            part &= (1 << ((self.repeats + 1) * period)) - 1
            repeated = part << period
            for k in range(2, self.repeats + 1):
                repeated &= part << (k * period)
            ahead = repeated >> (self.repeats * period)
            if ahead:
                offset = (ahead & -ahead).bit_length() - 1
                if best is None or offset < best:
                    best = offset
                    if best == 0:
                        break
        return best

    def hit_rate(self, function: str) -> float:
        """The share of predictions that came true, with one hit and one miss assumed (a new
        function starts at one half)."""
        calls = self._functions.get(function)
        if calls is None:
            return 0.5
        return (calls.hits + 1) / (calls.hits + calls.misses + 2)

    def forget(self, function: str) -> None:
        self._functions.pop(function, None)


Plan = tuple[float, float | None, float | None]
"""(keep until, prewarm at, prewarm until): a policy's decision, in clock times."""


def cover(plan: Plan, window: tuple[float, float], *, instead: bool) -> Plan:
    """`plan` with the predicted `window` covered: the idle instance kept through it when kept
    into it, else loaded for it when the plan loads none; when the plan does, the two join if
    they touch, else the window replaces a later one if `instead` (it hits more often)."""
    keep, at, until = plan
    start, end = window
    if end <= keep:
        return plan
    if start <= keep:  # kept into the window: kept through it (and into the plan's, if they meet)
        if at is not None and at <= end:
            return max(end, at if until is None else until), None, None
        return end, at, until
    if at is None:
        return keep, start, end
    until = at if until is None else until
    if start <= until and end >= at:
        return keep, min(at, start), max(until, end)
    if start < at and instead:
        return keep, start, end
    return plan
