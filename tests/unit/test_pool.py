"""The pool state and keep-alive decisions, driven by a fake clock."""

from __future__ import annotations

from scheduler.policy import FixedKeepAlive
from scheduler.pool import Instance, Pool, State

KEY = ("resize", 1)


def ready_instance(pool: Pool, now: float, concurrency: int = 1) -> Instance:
    instance = pool.new_instance(now)
    pool.begin_specialize(instance, KEY, concurrency)
    pool.mark_ready(instance, now)
    return instance


def test_claim_takes_free_slots_and_release_frees_them() -> None:
    pool = Pool(FixedKeepAlive(60))
    instance = ready_instance(pool, now=0.0, concurrency=2)
    assert pool.claim(KEY) is instance
    assert pool.claim(KEY) is instance
    assert pool.claim(KEY) is None
    pool.release(instance, now=1.0)
    assert pool.claim(KEY) is instance
    assert instance.calls == 3


def test_claim_prefers_the_most_recently_used_instance() -> None:
    pool = Pool(FixedKeepAlive(60))
    older = ready_instance(pool, now=0.0)
    newer = ready_instance(pool, now=5.0)
    assert pool.claim(KEY) is newer
    assert pool.claim(KEY) is older


def test_idle_instance_expires_after_keep_alive() -> None:
    pool = Pool(FixedKeepAlive(60))
    instance = ready_instance(pool, now=0.0)
    pool.claim(KEY)
    assert pool.next_expiry() is None  # busy: never expires
    pool.release(instance, now=10.0)
    assert pool.next_expiry() == 70.0
    assert pool.expired(now=69.9) == []
    assert pool.expired(now=70.0) == [instance]


def test_a_call_resets_the_keep_alive() -> None:
    pool = Pool(FixedKeepAlive(60))
    instance = ready_instance(pool, now=0.0)
    pool.claim(KEY)
    pool.release(instance, now=50.0)
    assert pool.expired(now=100.0) == []
    assert pool.expired(now=110.0) == [instance]


def test_starting_counts_slots_still_to_come_and_remove_unindexes() -> None:
    pool = Pool(FixedKeepAlive(60))
    starting = pool.new_instance(0.0)
    pool.begin_specialize(starting, KEY, 4)
    assert (pool.count(KEY), pool.starting(KEY)) == (1, 4)
    assert pool.claim(KEY) is None
    pool.remove(starting)
    assert (pool.count(KEY), pool.starting(KEY)) == (0, 0)
    assert starting.state is State.STOPPING


def test_generic_instances_are_taken_once() -> None:
    pool = Pool(FixedKeepAlive(60))
    generic = pool.new_instance(0.0)
    pool.mark_generic(generic)
    assert pool.generic_ready() == 1
    assert pool.take_generic() is generic
    pool.begin_specialize(generic, KEY, 1)
    assert pool.take_generic() is None
    assert pool.generic_ready() == 0
    assert pool.of_function("resize") == [generic]
