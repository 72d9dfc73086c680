"""The fake Kubernetes API of tests/k8s, started per test with the scheduler's Role in force."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from scheduler.backends.kubernetes import KubernetesSettings, PodPool
from tests.k8s.apimachinery import SCHEDULER_RULES
from tests.k8s.fakeapi import FakeKubernetes, assert_stopped

NS = "ember-functions"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    """The API server, with the ConfigMap that owns invoker pods (deploy/ creates it)."""
    api = FakeKubernetes(rules=SCHEDULER_RULES)
    await api.start()
    api.put(
        "configmaps",
        NS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ember-invokers"}},
    )
    yield api
    await api.stop()
    assert_stopped(api)


PoolFactory = Callable[..., Awaitable[PodPool]]


@pytest.fixture
async def make_pool(fake: FakeKubernetes, tmp_path: Path) -> AsyncIterator[PoolFactory]:
    pools: list[PodPool] = []
    kubeconfig = fake.kubeconfig(str(tmp_path / "kubeconfig"))

    async def make(**overrides: object) -> PodPool:
        values: dict[str, Any] = {
            "generic_pool_size": 2,
            "namespace": NS,
            "pod_start_timeout_s": 20.0,
            **overrides,
        }
        settings = KubernetesSettings(**values)
        pool = PodPool(PodPool.load_client(kubeconfig), settings)
        pools.append(pool)
        await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close()


def generic_ready(pool: PodPool, n: int) -> Callable[[], bool]:
    return lambda: len(pool.generic(ready_only=True)) >= n
