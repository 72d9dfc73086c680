"""The gateway's in-memory view of API keys and namespaces: a key is checked without SQL.

Every gateway holds all keys (hashes only) and namespaces, loaded at start and reloaded when
Postgres notifies a change (a key created or revoked, a namespace's default access set), or
when the notification connection was lost. A revocation made on this gateway is applied here
before its answer; other gateways apply it when the notification arrives (milliseconds). Expiry
is checked on every use against the clock, so an expired key is refused at once everywhere.

A key is `ek_<id>_<secret>`: the id finds the record, the secret is compared by its sha256.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from store import ApiKey, NamespaceRow, Store

KEY_PREFIX = "ek_"
ROLES = ("reader", "invoker", "deployer")


def new_key_secret() -> tuple[str, str, bytes]:
    """A fresh key: its id, the token to show once, and the hash to store."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    # A random 256-bit secret needs no slow hash: nothing to guess from a dictionary.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@dataclass(slots=True, frozen=True)
class KeyRefused:
    """Why a presented key is not accepted: `code` for the error body."""

    code: str
    message: str


class KeyRing:
    def __init__(
        self, store: Store, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    ) -> None:
        self._store = store
        self._clock = clock
        self._keys: dict[str, ApiKey] = {}
        self._namespaces: dict[str, NamespaceRow] = {}
        self._lock = asyncio.Lock()
        self._puts = 0
        self._pending: list[tuple[int, ApiKey | NamespaceRow]] = []
        """What this gateway changed (after its commit), numbered: a reload whose read began
        before a change may not see it, and must not undo it."""
        self.loads = 0
        """How often the keys were (re)loaded: tests await a change with `wait_loaded`."""
        self._loaded = asyncio.Event()

    async def reload(self) -> None:
        async with self._lock:  # one at a time, so the newest read is applied last
            began = self._puts
            keys = {k.id: k for k in await self._store.list_api_keys()}
            namespaces = {n.name: n for n in await self._store.list_namespaces()}
            for _, row in self._pending:  # changed here while (or after) the read ran
                if isinstance(row, ApiKey):
                    read = keys.get(row.id)
                    if read is None or (row.revoked_at is not None and read.revoked_at is None):
                        keys[row.id] = row  # created, or revoked: never undone by a late read
                else:
                    namespaces[row.name] = row
            self._pending = [(n, row) for n, row in self._pending if n > began]
            self._keys, self._namespaces = keys, namespaces
            self.loads += 1
            self._loaded.set()
            self._loaded = asyncio.Event()

    async def wait_loaded(self, since: int, timeout_s: float) -> None:
        """Wait until the keys were reloaded after `loads` was `since`."""
        async with asyncio.timeout(timeout_s):
            while self.loads <= since:
                await self._loaded.wait()

    def put(self, key: ApiKey) -> None:
        """A key this gateway created or revoked: applied before the notification's echo."""
        self._keys[key.id] = key
        self._remember(key)

    def put_namespace(self, namespace: NamespaceRow) -> None:
        self._namespaces[namespace.name] = namespace
        self._remember(namespace)

    def _remember(self, row: ApiKey | NamespaceRow) -> None:
        self._puts += 1
        self._pending.append((self._puts, row))

    def check(self, token: str) -> ApiKey | KeyRefused:
        """The key a bearer token stands for, or why it is refused. O(1), no SQL."""
        key_id, _, secret = token.removeprefix(KEY_PREFIX).partition("_")
        key = self._keys.get(key_id) if token.startswith(KEY_PREFIX) else None
        if key is None or not hmac.compare_digest(hash_secret(secret), key.secret_hash):
            return KeyRefused("unknown_key", "unknown API key (or a wrong admin token)")
        if key.revoked_at is not None:
            return KeyRefused("key_revoked", f"API key {key.id} was revoked")
        if key.expires_at is not None and key.expires_at <= self._clock():
            return KeyRefused(
                "key_expired", f"API key {key.id} expired at {key.expires_at.isoformat()}"
            )
        return key

    def keys(self) -> list[ApiKey]:
        return list(self._keys.values())

    def namespace_exists(self, name: str) -> bool:
        return name in self._namespaces

    def namespace_auth(self, name: str) -> str:
        """The default access of functions deployed in `name` ("public" unless set)."""
        found = self._namespaces.get(name)
        return "public" if found is None else found.auth

    def namespaces(self) -> list[NamespaceRow]:
        return sorted(self._namespaces.values(), key=lambda n: n.name)
