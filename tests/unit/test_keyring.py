"""The key ring's checks (pure, a fake clock) and the tenancy change notifications."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, cast

from gateway.keyring import KeyRefused, KeyRing, hash_secret, new_key_secret
from gateway.namespaces import qualify, shown_name, split_name
from store import ApiKey, Store
from store.changes import AccessChanged, ChangeFeed, SecretRotated, parse_change

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def key(key_id: str, secret: str, **fields: Any) -> ApiKey:
    values: dict[str, Any] = dict(
        id=key_id,
        namespace="team-a",
        role="invoker",
        secret_hash=hash_secret(secret),
        description="",
        created_by="admin",
        created_at=NOW,
        expires_at=None,
        revoked_at=None,
    )
    values.update(fields)
    return ApiKey(**values)


def ring(now: list[dt.datetime]) -> KeyRing:
    return KeyRing(cast(Store, None), clock=lambda: now[0])


def test_a_key_is_its_id_and_secret_and_only_the_hash_is_kept() -> None:
    key_id, token, secret_hash = new_key_secret()
    assert token.startswith(f"ek_{key_id}_")
    assert secret_hash == hash_secret(token.split("_", 2)[2])
    assert token.encode() not in secret_hash


def test_expired_revoked_unknown_and_wrong_secret_are_refused() -> None:
    now = [NOW]
    keys = ring(now)
    keys.put(key("aaaaaaaaaaaa", "s1", expires_at=NOW + dt.timedelta(seconds=10)))
    keys.put(key("bbbbbbbbbbbb", "s2", revoked_at=NOW))
    assert isinstance(keys.check("ek_aaaaaaaaaaaa_s1"), ApiKey)
    assert keys.check("ek_aaaaaaaaaaaa_wrong") == KeyRefused(
        "unknown_key", "unknown API key (or a wrong admin token)"
    )
    assert cast(KeyRefused, keys.check("ek_bbbbbbbbbbbb_s2")).code == "key_revoked"
    assert cast(KeyRefused, keys.check("ek_cccccccccccc_s3")).code == "unknown_key"
    assert cast(KeyRefused, keys.check("aaaaaaaaaaaa_s1")).code == "unknown_key"
    now[0] = NOW + dt.timedelta(seconds=10)  # the clock reaches the expiry: refused at once
    assert cast(KeyRefused, keys.check("ek_aaaaaaaaaaaa_s1")).code == "key_expired"


def test_names_in_namespaces() -> None:
    assert qualify("default", "hello") == "hello"
    assert qualify("team-a", "hello") == "team-a.hello"
    assert split_name("team-a.hello") == ("team-a", "hello")
    assert split_name("hello") == ("default", "hello")
    assert shown_name("team-a.hello") == "team-a/hello"


def test_access_and_secret_changes_are_never_skipped_as_twins() -> None:
    feed = ChangeFeed()
    access = '{"kind": "access"}'
    assert feed.feed(7, access) == AccessChanged()
    assert feed.feed(7, access) == AccessChanged()  # a second revocation is news too
    assert parse_change('{"kind": "secret", "functions": ["a", "team-a.b"]}') == SecretRotated(
        ("a", "team-a.b")
    )


class _SlowStore:
    """A store whose key listing waits until the test lets it answer: a reload's read that
    began before this gateway created or revoked a key."""

    def __init__(self, rows: list[ApiKey]) -> None:
        self.rows = rows
        self.reading = asyncio.Event()
        self.answer = asyncio.Event()

    async def list_api_keys(self) -> list[ApiKey]:
        rows = list(self.rows)  # the snapshot is taken when the read begins
        self.reading.set()
        await self.answer.wait()
        return rows

    async def list_namespaces(self) -> list[Any]:
        return []


async def test_a_reload_that_read_before_a_change_does_not_undo_it() -> None:
    """A key created (or revoked) here while a reload's read was in flight stays as this
    gateway committed it: the stale read must not make a fresh key 401 for a moment."""
    old = key("aaaaaaaaaaaa", "s1")
    store = _SlowStore([old])
    keys = KeyRing(cast(Store, store), clock=lambda: NOW)
    reload = asyncio.create_task(keys.reload())
    await store.reading.wait()
    keys.put(key("bbbbbbbbbbbb", "s2"))  # created after the read's snapshot
    keys.put(key("aaaaaaaaaaaa", "s1", revoked_at=NOW))  # revoked after it
    store.answer.set()
    await reload
    assert isinstance(keys.check("ek_bbbbbbbbbbbb_s2"), ApiKey)
    assert cast(KeyRefused, keys.check("ek_aaaaaaaaaaaa_s1")).code == "key_revoked"
    # The next reload reads both changes from the store; nothing is kept aside any longer.
    store.rows = [key("aaaaaaaaaaaa", "s1", revoked_at=NOW), key("bbbbbbbbbbbb", "s2")]
    store.reading, store.answer = asyncio.Event(), asyncio.Event()
    store.answer.set()
    await keys.reload()
    await keys.reload()
    assert keys._pending == []
    assert cast(KeyRefused, keys.check("ek_aaaaaaaaaaaa_s1")).code == "key_revoked"
