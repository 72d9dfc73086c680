"""Opt-in: deploy/ and the Kubernetes backend against a real cluster.

Runs only when EMBER_TEST_KUBECONFIG names a kubeconfig (any conformant cluster: kind, k3d,
minikube, a managed one) whose user may create namespaces, RBAC and pods. It:
- applies the dev overlay with server-side dry run (the API server accepts every object), then
  for real, except the Deployments and the StatefulSet (their images are the operator's to build);
- runs the backend as the scheduler's ServiceAccount (impersonated), so the Role is shown to be
  enough: the permission check passes and the pool creates, relabels and deletes pods;
- if the cluster cannot run the invoker image (EMBER_TEST_INVOKER_IMAGE, default the one in
  deploy/), says so and stops after what it could check.
Leaves the namespaces in place; `kubectl delete -k deploy/overlays/dev` removes everything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from scheduler.backends.kubernetes import STATE_LABEL, KubernetesError, KubernetesSettings, PodPool
from tests.k8s.kustomize import render

KUBECONFIG = os.environ.get("EMBER_TEST_KUBECONFIG")
pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="EMBER_TEST_KUBECONFIG is not set")
DEV = Path(__file__).resolve().parents[2] / "deploy" / "overlays" / "dev"
SKIPPED_KINDS = {"Deployment", "StatefulSet"}


def _dynamic() -> DynamicClient:
    return DynamicClient(PodPool.load_client(KUBECONFIG))  # type: ignore[no-untyped-call]


def _apply(dynamic: DynamicClient, obj: dict[str, Any], *, dry_run: bool) -> None:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    kwargs: dict[str, Any] = {"field_manager": "ember-tests", "force_conflicts": True}
    if dry_run:
        kwargs["dry_run"] = "All"
    dynamic.server_side_apply(  # type: ignore[no-untyped-call]
        resource,
        body=obj,
        name=obj["metadata"]["name"],
        namespace=obj["metadata"].get("namespace"),
        **kwargs,
    )


def test_the_api_server_accepts_every_object() -> None:
    dynamic = _dynamic()
    objects = render(DEV)
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    for obj in namespaces:  # other objects' dry runs need their namespace to exist
        _apply(dynamic, obj, dry_run=False)
    for obj in objects:
        _apply(dynamic, obj, dry_run=True)
    for obj in objects:
        if obj["kind"] not in SKIPPED_KINDS:
            _apply(dynamic, obj, dry_run=False)


@pytest.fixture
async def pool() -> AsyncIterator[PodPool]:
    test_the_api_server_accepts_every_object()
    api = PodPool.load_client(KUBECONFIG)
    api.set_default_header(
        "Impersonate-User",  # type: ignore[no-untyped-call]
        "system:serviceaccount:ember-system:ember-scheduler",
    )
    image = os.environ.get("EMBER_TEST_INVOKER_IMAGE", KubernetesSettings().image)
    pool = PodPool(
        api, KubernetesSettings(generic_pool_size=1, image=image, pod_start_timeout_s=180)
    )
    yield pool
    for pod in list(pool.pods.values()):
        with contextlib.suppress(KubernetesError):
            await pool.release(pod.name)
    await pool.close()


async def test_the_scheduler_role_is_enough_and_pods_run(pool: PodPool) -> None:
    await pool.start()  # the permission check runs as the scheduler's ServiceAccount
    try:
        await pool.wait_until(
            lambda: bool(pool.generic(ready_only=True)) or any(p.dead for p in pool.pods.values()),
            180,
        )
    except TimeoutError:
        pending = [f"{p.name}: {p.phase} {p.reason}" for p in pool.pods.values()]
        pytest.skip(
            f"the cluster did not run the invoker image in 180 s ({pending}); the "
            "manifests and the RBAC were checked"
        )
    pod = await pool.claim(
        gateway="k8s-test", function="probe", version=1, memory_bytes=64 << 20, timeout_s=5
    )
    assert pod.labels[STATE_LABEL] == "specialized"
    core = k8s.CoreV1Api(PodPool.load_client(KUBECONFIG))
    live: Any = core.read_namespaced_pod(pod.name, pool.settings.namespace)
    assert live.metadata.labels[STATE_LABEL] == "specialized"
    await pool.release(pod.name)
    await pool.wait_until(lambda: pod.name not in pool.pods, 60)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod(pod.name, pool.settings.namespace)
    assert gone.value.status == 404
