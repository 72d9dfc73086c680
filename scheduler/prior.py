"""The population prior: what idle times a function has before its own say much.

A function seen a few times says little about its next idle time; planned on two or three
gaps, it is unloaded where most functions would have been called again within minutes.
`HybridHistogram` plans such a function as if it also had an idle time drawn from the
population's (`POPULATION_PRIOR`), spread over the histogram's bins by `prior_shares`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

POPULATION_PRIOR: tuple[tuple[float, float], ...] = (
    (60.0, 0.456),
    (300.0, 0.200),
    (600.0, 0.046),
    (1200.0, 0.041),
    (1800.0, 0.004),
    (3600.0, 0.062),
    (7200.0, 0.126),
    (14400.0, 0.051),
    (math.inf, 0.014),
)
"""The idle times of a typical function, as (upper bound in seconds, share) bands: each
function's idle times in the tune half of the Azure 2019 trace sample, weighted equally per
function (`fit_prior`). Bands, not the exact minutes, so no one timer's period is learnt from it."""

PRIOR_BOUNDS_S: tuple[float, ...] = tuple(high for high, _ in POPULATION_PRIOR)
"""The bands' upper bounds in seconds: 1, 5, 10, 20, 30 minutes, 1, 2, 4 hours, beyond."""


def fit_prior(
    idle_times_s: Iterable[Sequence[float]], bounds_s: Sequence[float] = PRIOR_BOUNDS_S
) -> tuple[tuple[float, float], ...]:
    """A prior from the idle times of a population, one sequence per function: each band's
    share of a function's idle times, averaged over the functions that have any (a function
    called 10,000 times weighs what one called 3 times does). `POPULATION_PRIOR` is this over
    the tune half of the trace sample; the split-half benchmark fits one per tune half."""
    totals = [0.0] * len(bounds_s)
    functions = 0
    for gaps in idle_times_s:
        if not gaps:
            continue
        functions += 1
        for gap in gaps:
            band = next((i for i, high in enumerate(bounds_s) if gap < high), len(bounds_s) - 1)
            totals[band] += 1 / len(gaps)
    if not functions:
        raise ValueError("no idle times to fit a prior on: every function was called once")
    return tuple((high, round(t / functions, 3)) for high, t in zip(bounds_s, totals, strict=True))


def prior_shares(
    prior: tuple[tuple[float, float], ...], *, bin_s: float, range_s: float
) -> tuple[list[float], float]:
    """`prior` per bin of `bin_s` up to `range_s` (each band's share by the part of it the bin
    covers, spread evenly over the band), and the share beyond the range."""
    shares = [0.0] * math.ceil(range_s / bin_s)
    beyond, low = 0.0, 0.0
    for high, share in prior:
        if math.isinf(high) or low >= range_s:
            beyond += share
            continue
        top = min(high, range_s)
        for i in range(int(low // bin_s), math.ceil(top / bin_s)):
            overlap = min(top, (i + 1) * bin_s) - max(low, i * bin_s)
            shares[i] += share * max(0.0, overlap) / (high - low)
        beyond += share * (high - top) / (high - low)
        low = high
    return shares, beyond
