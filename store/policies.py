"""Per-function policy overrides (prewarm, keep-alive, warm and instance bounds); each change
is announced to every gateway."""

from __future__ import annotations

from collections.abc import Sequence

from store.base import StoreBase, retry_once
from store.queries import QUERIES
from store.records import PolicyRow


class PolicyStore(StoreBase):
    """Policy overrides."""

    async def set_policy(self, policy: PolicyRow, unset: Sequence[str] = ()) -> PolicyRow:
        """Store the non-None fields of a policy override and unset the fields named in
        `unset` (they inherit again); notify every gateway."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                QUERIES["set_policy"],
                policy.function,
                policy.prewarm,
                policy.keep_alive_s,
                policy.min_warm,
                policy.max_instances,
                list(unset),
            )
            await conn.execute(QUERIES["notify_policy_changed"], policy.function)
        assert row is not None
        return PolicyRow.from_row(row)

    @retry_once
    async def list_policies(self) -> list[PolicyRow]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_policies"])
        return [PolicyRow.from_row(r) for r in rows]

    async def delete_policy(self, function: str) -> bool:
        async with self._conn() as conn, conn.transaction():
            deleted = await conn.fetchval(QUERIES["delete_policy"], function)
            await conn.execute(QUERIES["notify_policy_changed"], function)
        return deleted is not None
