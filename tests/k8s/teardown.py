"""Leaving nothing behind: a pool is closed before its pods are deleted, since its refill
replaces the generic pods it sees go (issue 17: tests/k8s_real left one running)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubernetes import client as k8s

from scheduler.backends.kubernetes import APP, APP_LABEL, PodPool


def invoker_pods(core: k8s.CoreV1Api, namespace: str) -> list[str]:
    listing: Any = core.list_namespaced_pod(namespace, label_selector=f"{APP_LABEL}={APP}")
    return [p.metadata.name for p in listing.items]


def delete_invoker_pods(core: k8s.CoreV1Api, namespace: str, timeout_s: float = 60.0) -> None:
    """Delete every invoker pod of `namespace` and wait until they are gone."""
    deadline = time.monotonic() + timeout_s
    while names := invoker_pods(core, namespace):
        for name in names:
            try:
                core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"invoker pods left in {namespace}: {names}")
        time.sleep(0.2)


async def close_and_delete_pods(pool: PodPool, api: k8s.ApiClient) -> None:
    """Close `pool` (its refill stops), then delete every invoker pod through `api`."""
    await pool.close()
    await asyncio.to_thread(delete_invoker_pods, k8s.CoreV1Api(api), pool.settings.namespace)
    await asyncio.to_thread(api.close)
