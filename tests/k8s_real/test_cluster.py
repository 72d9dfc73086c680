"""Opt-in: deploy/ and the Kubernetes backend against a real API server (tests/k8s_real/conftest.py
says how one is found; .ci/run starts one for every run).

The backend runs as the scheduler's ServiceAccount (impersonated), so the Role is shown to be
enough. Covered: the overlay accepted and re-applied without change, the generic pool, a claim
and a cold start, a crashed and a deleted pod (with the exit code), adoption by a new pool, the
owner ConfigMap deleted (the garbage collector deletes the pods: no flood), and the
permissions removed (the pool fails). Every pool is closed before its pods are deleted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from scheduler.backends.kubernetes import STATE_LABEL, Forbidden, KubernetesSettings, PodPool
from tests.k8s.teardown import delete_invoker_pods
from tests.k8s_real.conftest import DEV, KUBECONFIG, SKIPPED_KINDS, admin, apply

NS = "ember-functions"
SCHEDULER = "system:serviceaccount:ember-system:ember-scheduler"
PoolFactory = Callable[..., Awaitable[PodPool]]
Objects = list[dict[str, Any]]


def as_scheduler() -> k8s.ApiClient:
    api = admin()
    api.set_default_header("Impersonate-User", SCHEDULER)  # type: ignore[no-untyped-call]
    return api


@pytest.fixture
async def make_pool(cluster: Objects) -> AsyncIterator[PoolFactory]:
    pools: list[PodPool] = []

    async def make(**overrides: Any) -> PodPool:
        values: dict[str, Any] = {
            "generic_pool_size": 1,
            "image": os.environ.get("EMBER_TEST_INVOKER_IMAGE", KubernetesSettings().image),
            "pod_start_timeout_s": 60.0,
            "access_check_s": 1.0,
            "vanish_window_s": 2.0,
            **overrides,
        }
        pool = PodPool(as_scheduler(), KubernetesSettings(**values))
        pools.append(pool)
        await pool.start()
        return pool

    yield make
    for pool in pools:  # closed first: a pool's refill would replace the pods deleted
        await pool.close()
    await asyncio.to_thread(delete_invoker_pods, k8s.CoreV1Api(admin()), NS)


async def generic_ready(pool: PodPool, n: int = 1, timeout_s: float = 30.0) -> None:
    try:
        await pool.wait_until(lambda: len(pool.generic(ready_only=True)) >= n, timeout_s)
    except TimeoutError:
        pods = [f"{p.name}: {p.phase} {p.reason}" for p in pool.pods.values()]
        pytest.fail(f"no ready generic pod after {timeout_s:g}s: {pods}")


def test_the_overlay_is_accepted_and_a_reapply_changes_nothing(cluster: Objects) -> None:
    dynamic = DynamicClient(admin())  # type: ignore[no-untyped-call]
    for obj in cluster:
        live = apply(dynamic, obj, dry_run=True)
        rv = live.metadata.resourceVersion
        now = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).get(
            name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace")
        )
        assert rv == now.metadata.resourceVersion, f"{obj['kind']} {obj['metadata']['name']}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_apply_twice_leaves_everything_unchanged(cluster: Objects, tmp_path: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(DEV)], capture_output=True, text=True, check=True
    ).stdout
    import yaml

    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] not in SKIPPED_KINDS]
    manifest = tmp_path / "dev.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    env = {**os.environ, "KUBECONFIG": KUBECONFIG}
    command = ["kubectl", "apply", "-f", str(manifest)]
    subprocess.run(command, env=env, capture_output=True, check=True)
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    # kubectl's client-side apply always sends a PDB's selector (patchStrategy "replace")
    # and says "configured" though nothing changes: the server-side check above covers it.
    changed = [ln for ln in again.splitlines() if "unchanged" not in ln]
    assert [ln for ln in changed if "poddisruptionbudget" not in ln] == [], again


async def test_generic_pool_claim_cold_start_and_release(make_pool: PoolFactory) -> None:
    pool = await make_pool()
    await generic_ready(pool)
    [generic] = pool.generic(ready_only=True)
    pod = await pool.claim(gateway="gw", function="probe", version=1, memory_bytes=1, timeout_s=5)
    assert pod.name == generic.name  # a relabel, not a pod start
    core = k8s.CoreV1Api(admin())
    live: Any = core.read_namespaced_pod(pod.name, NS)
    assert live.metadata.labels[STATE_LABEL] == "specialized"
    big = await pool.claim(
        gateway="gw", function="big", version=1, memory_bytes=1 << 30, timeout_s=5
    )
    assert big.usable()
    assert big.name != generic.name
    for name in (pod.name, big.name):
        await pool.release(name)
    await pool.wait_until(lambda: pod.name not in pool.pods and big.name not in pool.pods, 30)
    await generic_ready(pool)  # refilled


async def test_a_crashed_or_deleted_pod_is_reported_with_its_exit_code(
    make_pool: PoolFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pool = await make_pool(generic_pool_size=2)
    gone: dict[str, tuple[str, int | None]] = {}
    pool.on_gone.append(lambda p, reason: gone.update({p.name: (reason, p.exit_code)}))
    await generic_ready(pool, 2)
    a = await pool.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    b = await pool.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    pids = list(tmp_path_factory.getbasetemp().glob(f"kubelet*/{a.name}.pid"))
    if not pids:
        pytest.skip("pods run on a kubelet of the cluster: no process to crash from here")
    os.kill(int(pids[0].read_text()), signal.SIGKILL)
    await pool.wait_until(lambda: a.name in gone, 30)
    assert gone[a.name][1] == 128 + signal.SIGKILL
    k8s.CoreV1Api(admin()).delete_namespaced_pod(b.name, NS)  # kubectl delete pod
    await pool.wait_until(lambda: b.name in gone, 30)


async def test_a_new_pool_adopts_the_pods(make_pool: PoolFactory) -> None:
    first = await make_pool(generic_pool_size=2)
    await generic_ready(first, 2)
    claimed = await first.claim(gateway="gw", function="f", version=1, memory_bytes=1, timeout_s=1)
    await generic_ready(first, 2)
    names = {p.name for p in first.pods.values() if not p.dead}
    await first.close()
    second = await make_pool(generic_pool_size=2)
    assert {p.name for p in second.pods.values() if not p.dead} == names
    assert [p.name for p in second.owned_by("gw")] == [claimed.name]
    await asyncio.sleep(1.0)
    assert second.created_total == 0


async def test_a_deleted_owner_does_not_flood_the_namespace(
    cluster: Objects, make_pool: PoolFactory
) -> None:
    pool = await make_pool(generic_pool_size=2)
    await generic_ready(pool, 2)
    core = k8s.CoreV1Api(admin())
    [owner] = [
        o for o in cluster if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "ember-invokers"
    ]
    created = pool.created_total
    core.delete_namespaced_config_map("ember-invokers", NS)
    try:
        await pool.wait_until(lambda: not pool.generic(), 30)  # collected with their owner
        await asyncio.sleep(5.0)
        assert pool.created_total - created <= 4, f"{pool.created_total - created} pods created"
    finally:
        apply(DynamicClient(admin()), owner)  # type: ignore[no-untyped-call]
    await generic_ready(pool, 2, 60)


async def test_lost_permissions_fail_the_pool(cluster: Objects, make_pool: PoolFactory) -> None:
    pool = await make_pool()
    await generic_ready(pool)
    [binding] = [o for o in cluster if o["kind"] == "RoleBinding"]
    rbac = k8s.RbacAuthorizationV1Api(admin())
    rbac.delete_namespaced_role_binding(binding["metadata"]["name"], NS)
    try:
        await asyncio.wait_for(pool.broken.wait(), 20)
        assert isinstance(pool.failed, Forbidden), pool.failed
    finally:
        apply(DynamicClient(admin()), binding)  # type: ignore[no-untyped-call]
