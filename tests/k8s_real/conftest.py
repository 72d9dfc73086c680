"""A real cluster for tests/k8s_real: EMBER_TEST_KUBECONFIG (a user that may create namespaces,
RBAC and pods). With EMBER_TEST_NODE_KUBECONFIG too (a control plane without nodes: .ci/run
starts shared/k8s `cluster up`), the test kubelet (tests/k8s_real/kubelet.py) runs the pods.

The dev overlay is applied once (all but the workloads); at the end every invoker pod is
deleted, and the namespaces too when the session created them, so nothing is left behind.
A cluster where no node is Ready is said so at once: the tests skip instead of waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from scheduler.backends.kubernetes import PodPool
from tests.k8s.kustomize import render
from tests.k8s.teardown import delete_invoker_pods

KUBECONFIG = os.environ.get("EMBER_TEST_KUBECONFIG", "")
NODE_KUBECONFIG = os.environ.get("EMBER_TEST_NODE_KUBECONFIG", "")
DEV = Path(__file__).resolve().parents[2] / "deploy" / "overlays" / "dev"
NAMESPACES = ("ember-system", "ember-functions")
SKIPPED_KINDS = {"DaemonSet", "Deployment", "StatefulSet"}
"""Their images are the operator's to build; the tests run the backend themselves."""


def admin() -> k8s.ApiClient:
    return PodPool.load_client(KUBECONFIG)


def apply(dynamic: DynamicClient, obj: dict[str, Any], *, dry_run: bool = False) -> Any:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    kwargs: dict[str, Any] = {"field_manager": "ember-tests", "force_conflicts": True}
    if dry_run:
        kwargs["dry_run"] = "All"
    return dynamic.server_side_apply(  # type: ignore[no-untyped-call]
        resource,
        body=obj,
        name=obj["metadata"]["name"],
        namespace=obj["metadata"].get("namespace"),
        **kwargs,
    )


def apply_dev_overlay() -> list[dict[str, Any]]:
    """Namespaces first (other objects' dry runs need them), a dry run of everything, then
    everything but the workloads; the objects applied."""
    dynamic = DynamicClient(admin())  # type: ignore[no-untyped-call]
    objects = render(DEV)
    for obj in objects:
        if obj["kind"] == "Namespace":
            apply(dynamic, obj)
    for obj in objects:
        apply(dynamic, obj, dry_run=True)
    applied = [o for o in objects if o["kind"] not in SKIPPED_KINDS]
    for obj in applied:
        apply(dynamic, obj)
    return applied


def wait_for_a_ready_node(core: k8s.CoreV1Api, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes: Any = core.list_node()
        if any(
            c.type == "Ready" and c.status == "True"
            for n in nodes.items
            for c in n.status.conditions or []
        ):
            return
        if time.monotonic() > deadline:
            pytest.skip(
                "no node of the cluster is Ready, so no pod would run: the tests would only "
                "wait. For a control plane without nodes set EMBER_TEST_NODE_KUBECONFIG (the "
                "node credentials of shared/k8s `cluster env`): the test kubelet runs pods"
            )
        time.sleep(0.2)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """The dev overlay applied, a node to run pods; everything removed at the end."""
    if not KUBECONFIG:
        pytest.skip("EMBER_TEST_KUBECONFIG is not set")
    core: Any = k8s.CoreV1Api(admin())
    existing = {ns.metadata.name for ns in core.list_namespace().items}
    kubelet = None
    if NODE_KUBECONFIG:
        scratch = tmp_path_factory.mktemp("kubelet")
        log = open(scratch / "kubelet.log", "wb")  # noqa: SIM115 - open for the session
        kubelet = subprocess.Popen(
            [sys.executable, "-m", "tests.k8s_real.kubelet", "--node-kubeconfig",
             NODE_KUBECONFIG, "--admin-kubeconfig", KUBECONFIG, "--scratch", str(scratch)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_a_ready_node(core, 20 if kubelet is not None else 5)
        yield apply_dev_overlay()
    finally:
        delete_invoker_pods(core, "ember-functions")
        created = [ns for ns in NAMESPACES if ns not in existing]
        for ns in created:
            with contextlib.suppress(k8s.ApiException):
                core.delete_namespace(ns)
        deadline = time.monotonic() + 60
        while created and time.monotonic() < deadline:
            left = {n.metadata.name for n in core.list_namespace().items}
            if not left & set(created):
                break
            time.sleep(0.3)
        if kubelet is not None:
            kubelet.send_signal(signal.SIGTERM)
            try:
                kubelet.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(kubelet.pid, signal.SIGKILL)
                kubelet.wait()
            log.close()
