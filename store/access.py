"""Tenancy: namespaces, API keys (only their hashes), secrets (only their ciphertext: the
gateway encrypts and decrypts), and the audit trail of admin actions. Changes to keys and
namespaces, and secret rotations, are announced to every gateway (store/changes.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from store.base import StoreBase, retry_once
from store.queries import QUERIES
from store.records import Row


@dataclass(slots=True, frozen=True, kw_only=True)
class ApiKey:
    id: str
    namespace: str
    role: str
    secret_hash: bytes
    description: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Row) -> ApiKey:
        return cls(
            id=row["id"],
            namespace=row["namespace"],
            role=row["role"],
            secret_hash=bytes(row["secret_hash"]),
            description=row["description"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class NamespaceRow:
    name: str
    auth: str
    """"public" or "key": what a deploy in it gets when it does not say."""
    created_at: dt.datetime


@dataclass(slots=True, frozen=True, kw_only=True)
class SecretInfo:
    """A secret without its values: its namespace, name and the names of its keys."""

    namespace: str
    name: str
    keys: tuple[str, ...]
    updated_at: dt.datetime


@dataclass(slots=True, frozen=True, kw_only=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    namespace: str
    method: str
    path: str
    action: str
    status: int


def _secret(row: Row) -> SecretInfo:
    return SecretInfo(
        namespace=row["namespace"],
        name=row["name"],
        keys=tuple(row["keys"]),
        updated_at=row["updated_at"],
    )


class AccessStore(StoreBase):
    """Namespaces, API keys, secrets and the audit trail."""

    # -- keys and namespaces (every gateway caches them all) --------------------------------

    @retry_once
    async def list_api_keys(self) -> list[ApiKey]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_api_keys_all"])
        return [ApiKey.from_row(r) for r in rows]

    async def create_api_key(
        self,
        *,
        id: str,
        namespace: str,
        role: str,
        secret_hash: bytes,
        description: str,
        created_by: str,
        expires_at: dt.datetime | None,
    ) -> ApiKey:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(QUERIES["upsert_namespace"], namespace, None)
            row = await conn.fetchrow(
                QUERIES["insert_api_key"],
                id,
                namespace,
                role,
                secret_hash,
                description,
                created_by,
                expires_at,
            )
            await conn.execute(QUERIES["notify_access_changed"])
        assert row is not None
        return ApiKey.from_row(row)

    async def revoke_api_key(self, id: str, namespace: str | None) -> ApiKey | None:
        """Revoke a key (of `namespace` only, unless None); None when there is no such key."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["revoke_api_key"], id, namespace)
            await conn.execute(QUERIES["notify_access_changed"])
        return None if row is None else ApiKey.from_row(row)

    @retry_once
    async def list_namespaces(self) -> list[NamespaceRow]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_namespaces"])
        return [
            NamespaceRow(name=r["name"], auth=r["auth"], created_at=r["created_at"]) for r in rows
        ]

    async def set_namespace(self, name: str, auth: str | None = None) -> NamespaceRow:
        """Create a namespace, or change its default access (`auth` None: leave it)."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["upsert_namespace"], name, auth)
            await conn.execute(QUERIES["notify_access_changed"])
        assert row is not None
        return NamespaceRow(name=row["name"], auth=row["auth"], created_at=row["created_at"])

    # -- secrets ----------------------------------------------------------------------------

    async def set_secret(
        self, namespace: str, name: str, ciphertext: bytes, keys: Sequence[str]
    ) -> tuple[SecretInfo, list[str]]:
        """Store (or rotate) a secret; returns it and the functions whose active version reads
        it, announced so that every gateway rolls their instances."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                QUERIES["set_secret"], namespace, name, ciphertext, list(keys)
            )
            users = [
                r["name"]
                for r in await conn.fetch(QUERIES["functions_using_secret"], namespace, name)
            ]
            if users:
                await conn.execute(QUERIES["notify_secret_rotated"], users)
        assert row is not None
        return _secret(row), users

    @retry_once
    async def get_secret_ciphertext(self, namespace: str, name: str) -> bytes | None:
        async with self._conn() as conn:
            value = await conn.fetchval(QUERIES["get_secret_ciphertext"], namespace, name)
        return None if value is None else bytes(value)

    @retry_once
    async def list_secrets(self, namespace: str) -> list[SecretInfo]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_secrets"], namespace)
        return [_secret(r) for r in rows]

    async def delete_secret(self, namespace: str, name: str) -> bool:
        async with self._conn() as conn:
            deleted = await conn.fetchval(QUERIES["delete_secret"], namespace, name)
        return deleted is not None

    # -- audit ------------------------------------------------------------------------------

    async def record_audit(
        self, *, actor: str, namespace: str, method: str, path: str, action: str, status: int
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                QUERIES["record_audit"], actor, namespace, method, path, action, status
            )

    @retry_once
    async def list_audit(self, namespace: str | None, limit: int) -> list[AuditEntry]:
        async with self._conn() as conn:
            rows = await conn.fetch(QUERIES["list_audit"], namespace, limit)
        return [
            AuditEntry(
                id=r["id"],
                at=r["at"],
                actor=r["actor"],
                namespace=r["namespace"],
                method=r["method"],
                path=r["path"],
                action=r["action"],
                status=r["status"],
            )
            for r in rows
        ]
