"""Warm-pool policies as stored: overrides merged into effective settings, applied to the
scheduler. A function's effective policy is the platform's settings (`fn up --keep-alive`...),
overridden by the stored default ('*'), overridden by the function's own row."""

from __future__ import annotations

import contextlib
import dataclasses

from calls.functions import FunctionCache
from scheduler.policy import FunctionPolicy
from scheduler.scheduler import PoolSettings, Scheduler
from store import FunctionNotFound, PolicyRow, Store

DEFAULT = "*"
FIELDS = ("prewarm", "keep_alive_s", "min_warm", "max_instances")


def _merge(base: FunctionPolicy, row: PolicyRow | None) -> FunctionPolicy:
    if row is None:
        return base
    changes = {f: getattr(row, f) for f in FIELDS if getattr(row, f) is not None}
    return dataclasses.replace(base, **changes)


def effective(
    pool: PoolSettings, rows: list[PolicyRow]
) -> tuple[FunctionPolicy, dict[str, FunctionPolicy]]:
    """The platform's default, overridden by the stored default, and each function's own."""
    base = FunctionPolicy(keep_alive_s=pool.keep_alive_s, max_instances=pool.max_instances)
    by_name = {r.function: r for r in rows}
    default = _merge(base, by_name.get(DEFAULT))
    return default, {n: _merge(default, r) for n, r in by_name.items() if n != DEFAULT}


async def reload_policies(
    store: Store, scheduler: Scheduler, functions: FunctionCache, pool: PoolSettings
) -> None:
    """Read the stored policies and apply them to this gateway's scheduler."""
    default, overrides = effective(pool, await store.list_policies())
    scheduler.configure(default, overrides)
    names = (
        [f.name for f in await store.list_functions()]
        if default.min_warm
        else [n for n, p in overrides.items() if p.min_warm]
    )
    for name in names:
        if scheduler.policies.settings(name).min_warm:
            with contextlib.suppress(FunctionNotFound):  # deleted meanwhile
                await scheduler.ensure_warm(await functions.resolve(name))
