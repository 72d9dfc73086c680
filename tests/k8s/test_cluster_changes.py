"""The cluster changes under the pool, as it did on a real API server (issue 17): the owner
ConfigMap deleted (the garbage collector deletes every pod it owned, and every pod created for
it afterwards), the permissions removed (403) or the credentials gone (401), and a test's
clean-up racing the refill."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from scheduler.backends.kubernetes import Forbidden, KubernetesError, PodPool
from tests.k8s.conftest import NS, PoolFactory, generic_ready
from tests.k8s.fakeapi import FakeKubernetes
from tests.k8s.teardown import close_and_delete_pods


def creates(fake: FakeKubernetes) -> int:
    return sum(1 for r in fake.requests if r == ("create", "pods"))


async def test_a_deleted_owner_stops_the_refill_until_it_is_back(
    fake: FakeKubernetes, make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "ember.scheduler.kubernetes")
    pool = await make_pool(generic_pool_size=2, vanish_window_s=1.5)
    await pool.wait_until(generic_ready(pool, 2), 20)
    before = creates(fake)
    fake.delete_object("configmaps", NS, "ember-invokers")
    await fake.wait_until(lambda: not fake.pods(NS), 10)  # collected with their owner
    await asyncio.sleep(3.0)
    # No flood: the pods it made before it read the owner again, and none after.
    assert creates(fake) - before <= 4, f"{creates(fake) - before} pods created"
    assert "ConfigMap" in caplog.text
    assert "not creating invoker pods" in caplog.text
    # Re-created (a new uid): the pool takes it as the owner and fills again.
    fake.put(
        "configmaps",
        NS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ember-invokers"}},
    )
    await pool.wait_until(generic_ready(pool, 2), 60)
    uid = fake.objects[("configmaps", NS, "ember-invokers")]["metadata"]["uid"]
    for obj in fake.pods(NS):
        if not obj["metadata"].get("deletionTimestamp"):
            assert obj["metadata"]["ownerReferences"][0]["uid"] == uid


async def test_pods_that_vanish_as_fast_as_they_are_created_back_off(
    fake: FakeKubernetes, make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "ember.scheduler.kubernetes")
    pool = await make_pool(generic_pool_size=2, vanish_window_s=1.5)
    await pool.wait_until(generic_ready(pool, 2), 20)
    before = creates(fake)

    async def reaper() -> None:  # someone (a policy engine, a script) deletes every pod
        while True:
            for obj in fake.pods(NS):
                if not obj["metadata"].get("deletionTimestamp"):
                    fake.modify(
                        NS,
                        obj["metadata"]["name"],
                        lambda o: o["metadata"].update(deletionTimestamp="now"),
                    )
                    fake.objects.pop(("pods", NS, obj["metadata"]["name"]), None)
                    fake._record("DELETED", "pods", obj)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(reaper(), name="reaper")
    try:
        await asyncio.sleep(3.0)
    finally:
        task.cancel()
    assert creates(fake) - before <= 8, f"{creates(fake) - before} pods created in 3 s"
    assert "vanish as fast as they are created" in caplog.text
    await pool.wait_until(generic_ready(pool, 2), 60)  # and it recovers


@pytest.mark.parametrize("how", ["rolebinding deleted (403)", "credentials gone (401)"])
async def test_lost_permissions_fail_the_pool(
    fake: FakeKubernetes, make_pool: PoolFactory, how: str
) -> None:
    pool = await make_pool(generic_pool_size=1, access_check_s=1.0)
    await pool.wait_until(generic_ready(pool, 1), 20)
    if "403" in how:
        fake.rules = []
    else:
        fake.revoked = True
    [pod] = pool.generic()
    with pytest.raises(KubernetesError):  # the next call is refused
        await pool.release(pod.name)
    await asyncio.wait_for(pool.broken.wait(), 10)
    failed = pool.failed
    assert isinstance(failed, KubernetesError)
    assert failed.denied
    if "403" in how:
        assert isinstance(failed, Forbidden)
        assert "may not list pods" in str(failed)
    else:
        assert failed.status == 401


async def test_a_teardown_closes_the_pool_before_deleting_its_pods(
    fake: FakeKubernetes, make_pool: PoolFactory, tmp_path: Path
) -> None:
    pool = await make_pool(generic_pool_size=2)
    await pool.wait_until(generic_ready(pool, 2), 20)
    await pool.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    fake.rules = None  # the test's own (admin) client deletes
    await close_and_delete_pods(pool, PodPool.load_client(fake.kubeconfig(str(tmp_path / "kc"))))
    await asyncio.sleep(1.0)  # a refill would have created a pod by now
    assert fake.pods(NS) == []
