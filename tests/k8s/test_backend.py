"""The Kubernetes backend through the official client, over real HTTP, against tests/k8s/fakeapi.

The fake enforces exactly the rules of the scheduler's Role in deploy/ (resourceNames included),
so these tests also show that the Role is sufficient. Pods run the invoker as real processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from invoker.protocol import Connection
from scheduler.backends.kubernetes import (
    GATEWAY_LABEL,
    STATE_LABEL,
    Forbidden,
    KubernetesSettings,
    PodPool,
    PodView,
    Unreachable,
)
from tests.k8s.apimachinery import SCHEDULER_RULES, without
from tests.k8s.conftest import NS, PoolFactory, generic_ready
from tests.k8s.fakeapi import FakeKubernetes


async def test_the_generic_pool_is_filled_with_restricted_pods(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    pool = await make_pool()
    await pool.wait_until(generic_ready(pool, 2), 20)
    pods = fake.pods(NS)
    assert len(pods) == 2
    for obj in pods:
        spec = obj["spec"]
        assert obj["metadata"]["labels"][STATE_LABEL] == "generic"
        assert obj["metadata"]["ownerReferences"][0]["kind"] == "ConfigMap"
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = spec["containers"][0]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["resources"]["limits"]["memory"] == "256Mi"
    # The invoker in each pod answers on its pod IP.
    for pod in pool.generic(ready_only=True):
        conn = await Connection.open(*pool.address(pod))
        conn.close()


async def test_claim_relabels_a_generic_pod_and_the_pool_refills(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    pool = await make_pool()
    await pool.wait_until(generic_ready(pool, 2), 20)
    before = {p["metadata"]["name"] for p in fake.pods(NS)}
    pod = await pool.claim(
        gateway="gw-1", function="resize", version=3, memory_bytes=128 << 20, timeout_s=30
    )
    assert pod.name in before  # specialization of a ready pod, not a pod start
    labels = fake.objects[("pods", NS, pod.name)]["metadata"]["labels"]
    assert labels[STATE_LABEL] == "specialized"
    assert labels["ember.dev/function"] == "resize"
    assert labels["ember.dev/version"] == "3"
    assert labels[GATEWAY_LABEL] == "gw-1"
    await pool.wait_until(generic_ready(pool, 2), 20)  # refilled off the request path
    assert len(fake.pods(NS)) == 3
    await pool.release(pod.name)
    await pool.wait_until(lambda: pod.name not in pool.pods, 20)
    assert ("pods", NS, pod.name) not in fake.objects


async def test_a_function_bigger_than_a_generic_pod_gets_its_own_pod(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    pool = await make_pool(generic_pool_size=1)
    await pool.wait_until(generic_ready(pool, 1), 20)
    generic = {p.name for p in pool.generic()}
    pod = await pool.claim(
        gateway="gw-1", function="big", version=1, memory_bytes=1 << 30, timeout_s=30
    )
    assert pod.name not in generic
    container = fake.objects[("pods", NS, pod.name)]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "1024Mi"
    assert {p.name for p in pool.generic()} == generic


async def test_an_empty_generic_pool_creates_a_specialized_pod(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    pool = await make_pool(generic_pool_size=0)
    pod = await pool.claim(
        gateway="gw-1", function="f", version=1, memory_bytes=64 << 20, timeout_s=30
    )
    assert pod.usable()
    assert pod.labels[STATE_LABEL] == "specialized"
    assert len(fake.pods(NS)) == 1


async def test_a_conflicting_claim_takes_another_pod(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    pool = await make_pool()
    await pool.wait_until(generic_ready(pool, 2), 20)
    first = min(p.name for p in pool.generic())
    # Someone changes the pod the pool would take, after the pool saw it: its patch carries a
    # stale resourceVersion, gets 409, and the pool takes the next pod instead.
    fake.requests.clear()
    stale = pool.pods[first]
    fake.modify(NS, first, lambda o: o["metadata"].setdefault("annotations", {}).update(x="1"))
    pool.pods[first] = stale
    pod = await pool.claim(
        gateway="gw-1", function="f", version=1, memory_bytes=64 << 20, timeout_s=30
    )
    assert pod.name != first
    assert fake.requests.count(("patch", "pods")) == 2
    assert fake.objects[("pods", NS, first)]["metadata"]["labels"][STATE_LABEL] == "generic"


async def test_a_failed_or_deleted_pod_is_reported_gone(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    pool = await make_pool(generic_pool_size=2)
    gone: list[tuple[str, str]] = []
    pool.on_gone.append(lambda pod, reason: gone.append((pod.name, reason)))
    await pool.wait_until(generic_ready(pool, 2), 20)
    a = await pool.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    b = await pool.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    await fake.crash_pod(a.name)
    await pool.wait_until(lambda: len(gone) == 1, 20)
    assert gone[0][0] == a.name
    assert "OOMKilled" in gone[0][1] or "Error" in gone[0][1]
    # Deleted by someone else (kubectl delete pod, an eviction).
    fake.modify(NS, b.name, lambda o: o["metadata"].update(deletionTimestamp="now"))
    await pool.wait_until(lambda: len(gone) == 2, 20)
    assert gone[1][0] == b.name


async def test_an_expired_watch_lists_again_and_misses_nothing(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    pool = await make_pool(generic_pool_size=1)
    await pool.wait_until(generic_ready(pool, 1), 20)
    gone: list[str] = []
    pool.on_gone.append(lambda pod, reason: gone.append(pod.name))
    claimed = await pool.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    await pool.wait_until(generic_ready(pool, 1), 20)
    relists = pool.relists_total
    fake.expire_watches()
    # Changed while the pool was not watching: only a new list can tell.
    obj = fake.objects.pop(("pods", NS, claimed.name))
    fake.rv += 1
    fake.compacted = fake.rv
    del obj
    await pool.wait_until(
        lambda: pool.relists_total > relists and claimed.name not in pool.pods, 20
    )
    assert gone == [claimed.name]
    assert ("watch", "pods") in fake.requests


async def test_a_restarted_scheduler_adopts_the_pods(
    fake: FakeKubernetes, make_pool: PoolFactory
) -> None:
    first = await make_pool(generic_pool_size=2)
    await first.wait_until(generic_ready(first, 2), 20)
    claimed = await first.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    await first.wait_until(generic_ready(first, 2), 20)
    await first.close()
    names = {p["metadata"]["name"] for p in fake.pods(NS)}
    created = sum(1 for r in fake.requests if r == ("create", "pods"))
    second = await make_pool(generic_pool_size=2)
    assert {p.name for p in second.generic(ready_only=True)} == names - {claimed.name}
    assert [p.name for p in second.owned_by("gw")] == [claimed.name]
    assert sum(1 for r in fake.requests if r == ("create", "pods")) == created
    assert {p["metadata"]["name"] for p in fake.pods(NS)} == names


async def test_a_missing_permission_is_named(fake: FakeKubernetes, tmp_path: Path) -> None:
    fake.rules = without(without(SCHEDULER_RULES, "pods", "watch"), "pods", "delete")
    pool = PodPool(
        PodPool.load_client(fake.kubeconfig(str(tmp_path / "kc"))), KubernetesSettings(namespace=NS)
    )
    with pytest.raises(
        Forbidden, match='may not watch pods, delete pods in namespace "ember-functions"'
    ):
        await pool.start()
    await pool.close()


async def test_an_unreachable_api_server_is_a_clear_error(tmp_path: Path) -> None:
    fake = FakeKubernetes()
    fake.url = "http://127.0.0.1:9"  # nothing listens there
    pool = PodPool(
        PodPool.load_client(fake.kubeconfig(str(tmp_path / "kc"))), KubernetesSettings(namespace=NS)
    )
    with pytest.raises(
        Unreachable,
        match=r"cannot reach the Kubernetes API at "
        r"http://127\.0\.0\.1:9",
    ):
        await pool.start()
    await pool.close()


def test_a_pod_view_reads_failure_reasons() -> None:
    pod = PodView.from_object(
        {
            "metadata": {"name": "p", "labels": {STATE_LABEL: "specialized"}},
            "status": {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: memory.",
            },
        }
    )
    assert pod.dead
    assert pod.reason == "Evicted"
