"""The Kubernetes API as the backend calls it: the client, calls on threads (the official
client is synchronous), the permissions it needs, and its errors translated into ours:

    BackendError
     └── KubernetesError      a call failed; `status` when the server answered
          ├── Unreachable     the API server could not be reached
          └── Forbidden       the service account lacks a permission (named); 403
    (a 401, credentials refused, is a KubernetesError with status 401)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from scheduler.backends import BackendError
from scheduler.backends.kubernetes.pods import KubernetesSettings

REQUIRED_PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("pods", "list"),
    ("pods", "watch"),
    ("pods", "create"),
    ("pods", "patch"),
    ("pods", "delete"),
    ("configmaps", "get"),
)
"""Every (resource, verb) the backend uses in the functions namespace; the scheduler's Role in
deploy/ grants exactly these (a test holds the two together)."""


class KubernetesError(BackendError):
    """A Kubernetes API call failed; `status` is the HTTP status when the server answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def denied(self) -> bool:
        """The credentials were refused (401) or lack a permission (403)."""
        return self.status in (401, 403)


class Unreachable(KubernetesError):
    """The API server could not be reached."""


class Forbidden(KubernetesError):
    """The service account lacks a permission."""


def api_error(exc: ApiException, what: str) -> KubernetesError:
    if exc.status == 401:
        return KubernetesError(
            f"{what}: 401 Unauthorized: the API server refused the scheduler's credentials "
            "(its ServiceAccount or token is gone?)",
            401,
        )
    if exc.status == 403:
        return Forbidden(
            f"{what}: forbidden ({exc.reason}); the scheduler's service account "
            "needs the Role in deploy/base/scheduler-rbac.yaml",
            403,
        )
    raw: Any = exc.body
    body = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(body).get("message", body)
    return KubernetesError(f"{what}: {exc.status} {exc.reason}: {body}", exc.status)


def load_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """A client for the cluster: from `kubeconfig` when given, else in-cluster."""
    configuration = k8s.Configuration()
    try:
        if kubeconfig:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    except k8s_config.ConfigException as exc:
        raise KubernetesError(
            f"no Kubernetes configuration: {exc}; run in a pod with a service account, "
            "or set KUBECONFIG"
        ) from exc
    return k8s.ApiClient(configuration)


async def call(
    api: k8s.ApiClient, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Call the API on a thread; the JSON of the answer, as a dict."""
    kwargs.setdefault("_preload_content", False)
    kwargs.setdefault("_request_timeout", 30)
    try:
        response = await asyncio.to_thread(fn, *args, **kwargs)
    except ApiException as exc:
        raise api_error(exc, what) from exc
    except Exception as exc:  # urllib3: connection refused, DNS, TLS, timeouts
        host = api.configuration.host
        raise Unreachable(f"{what}: cannot reach the Kubernetes API at {host}: {exc}") from exc
    data: bytes = cast(Any, response).data
    return json.loads(data) if data else {}


async def check_access(api: k8s.ApiClient, settings: KubernetesSettings) -> None:
    """Fail early, and say which permission is missing, rather than on the first call."""
    auth = k8s.AuthorizationV1Api(api)
    missing = []
    for resource, verb in REQUIRED_PERMISSIONS:
        attributes = {"namespace": settings.namespace, "verb": verb, "resource": resource}
        if resource == "configmaps":  # the Role grants one ConfigMap by name
            attributes["name"] = settings.owner_configmap
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        answer = await call(
            api, "checking permissions", auth.create_self_subject_access_review, review
        )
        if not answer.get("status", {}).get("allowed"):
            missing.append(f"{verb} {resource}")
    if missing:
        raise Forbidden(
            f"the scheduler's service account may not {', '.join(missing)} in namespace "
            f'"{settings.namespace}"; apply deploy/base/scheduler-rbac.yaml '
            "(or grant the same rules)",
            403,
        )


async def owner_reference(api: k8s.ApiClient, settings: KubernetesSettings) -> dict[str, Any]:
    """The reference to the ConfigMap that owns every invoker pod (deleting it lets
    Kubernetes garbage-collect them)."""
    name = settings.owner_configmap
    try:
        cm = await call(
            api,
            f'reading ConfigMap "{name}"',
            k8s.CoreV1Api(api).read_namespaced_config_map,
            name,
            settings.namespace,
        )
    except KubernetesError as exc:
        raise KubernetesError(
            f'{exc}; the ConfigMap "{name}" in namespace "{settings.namespace}" owns '
            "the invoker pods (deploy/base creates it)",
            exc.status,
        ) from exc
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": name,
        "uid": cm["metadata"]["uid"],
    }
