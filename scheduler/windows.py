"""Plans for a histogram of idle times: the paper's percentile rule (`percentile_plan`), the
cheapest keep-then-prewarm plan in one pass (`cheapest_plan`), and the counts completed with
what the idle times seen have not shown yet (`with_unseen`).

A plan (keep, start, end), in seconds after an instance goes idle: keep it until `keep`, then
(when `start` > `keep`) load one again at `start` and keep that one until `end`. Over the idle
times seen, a plan costs the time kept warm, plus `break_even_s` per cold start, plus
`start_cost_s` per instance start (a cold start is one, a prewarm is one). `cheapest_plan` finds
the plan of least cost among the edges of the filled bins in O(filled bins).

With N idle times in all, C(t) of them at most t and X(t) their sum, B = break_even + start
cost, the plan's cost splits into a part for each of its three times:

    f(keep)  = X(keep) + (keep + B) * (N - C(keep))
    g(start) = -X(s-) + (start + B) * C(s-) - start * N + start_cost * (N - C(s-))
    h(end)   = X(end) + end * (N - C(end)) - B * C(end)

(s-: the idle times below `start`)

so the best `end` after each `start`, and the best `start` after each `keep`, are suffix
minima: two passes instead of the three nested loops of the direct search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate


def cheapest_plan(
    bins: Sequence[tuple[int, float]],
    out_of_range: float,
    *,
    bin_s: float,
    break_even_s: float,
    start_cost_s: float = 0.0,
    keep_margin: float = 1.0,
    prewarm_margin: float = 1.0,
) -> tuple[float, float, float]:
    """`bins`: (index, count) of the filled bins, in order (a count may be a fraction: a
    prior's); an idle time in bin i counts as (i + 0.5) x `bin_s`. Keeps and ends are bin
    ends x `keep_margin`, starts bin starts x `prewarm_margin`. Returns (keep, start, end);
    `start` <= `keep` means no second part."""
    xs = [(i + 0.5) * bin_s for i, _ in bins]
    n = len(xs)
    count_le = [0, *accumulate(c for _, c in bins)]  # count_le[j]: the first j filled bins
    x_le = [0.0, *accumulate(x * c for x, (_, c) in zip(xs, bins, strict=True))]
    total = count_le[n] + out_of_range
    b = break_even_s + start_cost_s
    edges = [(i + 1) * bin_s * keep_margin for i, _ in bins]
    starts = [i * bin_s * prewarm_margin for i, _ in bins]

    # h(end) for each edge, then its suffix minimum (the leftmost on ties).
    h: list[float] = []
    j = 0
    for end in edges:
        while j < n and xs[j] <= end:
            j += 1
        h.append(x_le[j] + end * (total - count_le[j]) - b * count_le[j])
    best_h = _suffix_argmin(h)

    # v(start) = g(start) + the best h(end) with end > start; then its suffix minimum.
    v: list[float] = []
    v_end: list[int] = []
    j = q = 0
    for start in starts:
        while j < n and xs[j] < start:
            j += 1
        while q < n and edges[q] <= start:
            q += 1
        if q == n:
            v.append(math.inf)
            v_end.append(-1)
            continue
        lo = count_le[j]
        g = -x_le[j] + start * lo - start * total + b * lo + start_cost_s * (total - lo)
        v.append(g + h[best_h[q]])
        v_end.append(best_h[q])
    best_v = _suffix_argmin(v)

    best = (math.inf, 0.0, 0.0, 0.0)
    j = q = 0
    for keep in [0.0, *edges]:
        while j < n and xs[j] <= keep:
            j += 1
        while q < n and starts[q] <= keep:
            q += 1
        beyond = total - count_le[j]
        f = x_le[j] + keep * beyond + b * beyond
        if f < best[0]:
            best = (f, keep, keep, keep)
        if q < n:
            s = best_v[q]
            if f + v[s] < best[0]:
                best = (f + v[s], keep, starts[s], edges[v_end[s]])
    return best[1], best[2], best[3]


def with_unseen(
    bins: Sequence[int], out_of_range: float, *, above: float = 2.0
) -> tuple[list[float], float]:
    """A function's bin counts with what its idle times so far have not shown: one idle time
    in each run of empty bins between two filled ones, and one above the largest (up to
    `above` x its bin's end; the part past the last bin counted beyond the range) unless some
    idle time already fell beyond the range. Each is spread over its bins evenly in log time
    (bin j weighs 1 / (j + 0.5)). Returns the counts per bin and the count beyond the range.

    With n idle times seen, the next one is as likely to fall in any of the n + 1 intervals
    they cut the line into (Hill's A(n), the predictive rule that assumes nothing about their
    distribution): a plan made from the bare counts gives an interval nobody has fallen into
    yet no chance at all, so a function's keep grows one cold start at a time as longer gaps
    come. Filling the empty runs gives each such interval about one idle time's weight: the
    runs between filled bins weigh less as the bins fill; the one above does not fade
    (keeping an instance past the longest idle time costs nothing on those seen, so a plan
    covers it wherever a cold start is priced above the time). O(bins)."""
    counts = [float(c) for c in bins]
    beyond = float(out_of_range)
    last = -1
    for index, count in enumerate(bins):
        if not count:
            continue
        if 0 <= last < index - 1:
            _spread(counts, last + 1, index, 1.0)
        last = index
    if last >= 0 and not out_of_range:
        top = last + 1
        beyond += _spread(counts, top, max(top + 1, math.ceil(top * above)), 1.0)
    return counts, beyond


def _spread(counts: list[float], first: int, end: int, weight: float) -> float:
    """Add `weight` over bins first..end-1, bin j in proportion to 1 / (j + 0.5); returns
    the part that falls past the last bin."""
    total = sum(1.0 / (j + 0.5) for j in range(first, end))
    past = 0.0
    for j in range(first, end):
        share = weight / (j + 0.5) / total
        if j < len(counts):
            counts[j] += share
        else:
            past += share
    return past


def _suffix_argmin(values: list[float]) -> list[int]:
    """For each i, the index of the least of values[i:] (the leftmost of equals); [-1] past
    the end is never read."""
    out = [0] * len(values)
    best = -1
    for i in range(len(values) - 1, -1, -1):
        if best < 0 or values[i] <= values[best]:
            best = i
        out[i] = best
    return out


def percentile_plan(
    bins: list[int],
    in_range: int,
    sum_of_squares: int,
    *,
    bin_s: float,
    range_s: float,
    percentiles: tuple[float, float],
    margins: tuple[float, float],
    cv_threshold: float,
) -> tuple[float, float, float]:
    """Shahrad et al.'s rule on `bins` (counts per bin; `sum_of_squares` of them): when the
    counts are concentrated (coefficient of variation >= `cv_threshold`), unload and prewarm
    at margins[0] x the head percentile, keep until margins[1] x the tail one; else keep for
    the whole range. (keep, start, end) as `cheapest_plan`."""
    mean = in_range / len(bins)
    variance = max(0.0, sum_of_squares / len(bins) - mean * mean)
    if not mean or math.sqrt(variance) / mean < cv_threshold:
        return 0.0, 0.0, range_s
    found = []
    for percentile in percentiles:
        threshold, seen, at = percentile / 100 * in_range, 0, len(bins) - 1
        for index, count in enumerate(bins):
            seen += count
            if count and seen >= threshold:
                at = index
                break
        found.append(at)
    return 0.0, margins[0] * found[0] * bin_s, margins[1] * (found[1] + 1) * bin_s
