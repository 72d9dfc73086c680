"""What an invoker pod is: its labels, its settings, the pod manifest the pool creates, and
`PodView`, what the pool reads back from the list and the watch. Plain data: no API call here.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

APP_LABEL = "app.kubernetes.io/name"
APP = "ember-invoker"
STATE_LABEL = "ember.dev/state"
FUNCTION_LABEL = "ember.dev/function"
VERSION_LABEL = "ember.dev/version"
GATEWAY_LABEL = "ember.dev/gateway"
MEMORY_ANNOTATION = "ember.dev/memory-bytes"

INVOKER_COMMAND = ["python", "-m", "invoker"]
"""The invoker image's entry point, and the command the local backend runs."""
ENV_DIR = "/var/cache/ember/envs"
"""Where an invoker pod keeps the environments it fetched (an emptyDir; EMBER_ENV_DIR)."""


def _mebibytes(n_bytes: int) -> str:
    return f"{max(1, -(-n_bytes // (1 << 20)))}Mi"


def label_value(text: str) -> str:
    """A label value for `text` (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:63].strip("._-")
    return value or "x"


@dataclass(slots=True, frozen=True, kw_only=True)
class KubernetesSettings:
    namespace: str = "ember-functions"
    """Namespace of the invoker pods (EMBER_NAMESPACE)."""
    image: str = "ghcr.io/ember-faas/invoker:0.1.0-py3.11"
    """The invoker runtime image (EMBER_INVOKER_IMAGE); see runtime-images/."""
    generic_pool_size: int = 2
    """Generic pods kept ready (EMBER_GENERIC_POOL): each absorbs one cold start without a pod
    start. Size it to the cold starts expected within one pod start time (see
    docs/kubernetes.md)."""
    port: int = 8080
    """Port the invoker listens on in its pod."""
    generic_memory_bytes: int = 256 << 20
    """Memory limit of a generic pod; a function that needs more gets a pod of its own."""
    cpu_request: str = "50m"
    cpu_limit: str = "1"
    owner_configmap: str = "ember-invokers"
    """A ConfigMap in the functions namespace that owns every invoker pod: deleting it (or
    Ember) lets Kubernetes garbage-collect them. deploy/ creates it."""
    pod_start_timeout_s: float = 120.0
    """How long a new pod may take to become ready (image pull included)."""
    env_dir_bytes: int = 2 << 30
    """Size limit of an invoker pod's environments directory (an emptyDir, on the node's
    disk): the unpacked environment and, while it is fetched, its archive
    (EMBER_ENV_DIR_MIB; at least FN_MAX_ENV and a bit)."""
    stop_grace_s: int = 2
    """terminationGracePeriodSeconds of invoker pods."""
    service_account: str = "ember-invoker"
    """The invoker pods' ServiceAccount: no token is mounted, so it has no rights anyway."""
    access_check_s: float = 60.0
    """How often the scheduler checks that its permissions still hold, and how long a 401 or
    403 may last before it checks again at once (a tenth of it): when they are gone the pool
    fails and the scheduler exits with code 2 (EMBER_ACCESS_CHECK, seconds)."""
    vanish_window_s: float = 10.0
    """Pods that vanish without the scheduler deleting them within this window count towards
    the refill's back-off (the garbage collector deletes pods whose owner is gone)."""


@dataclass(slots=True)
class PodView:
    """What the pool knows of one invoker pod, from the list and the watch."""

    name: str
    uid: str
    resource_version: str
    labels: dict[str, str]
    phase: str
    ready: bool
    ip: str | None
    deleting: bool
    memory_bytes: int
    image: str = ""
    reason: str = ""
    exit_code: int | None = None
    """The container's exit code once it has terminated (137 after a SIGKILL)."""

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> PodView:
        meta, status = obj.get("metadata", {}), obj.get("status", {})
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        reason = status.get("reason") or status.get("message") or ""
        exit_code = None
        for cs in status.get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term:
                exit_code = term.get("exitCode")
                if not reason:
                    reason = f"{term.get('reason', 'terminated')} (exit {exit_code})"
        annotations = meta.get("annotations") or {}
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            labels=dict(meta.get("labels") or {}),
            phase=status.get("phase", "Pending"),
            ready=ready,
            ip=status.get("podIP"),
            deleting=bool(meta.get("deletionTimestamp")),
            memory_bytes=int(annotations.get(MEMORY_ANNOTATION, "0") or 0),
            reason=reason,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            image=((obj.get("spec") or {}).get("containers") or [{}])[0].get("image", ""),
        )

    @property
    def state(self) -> str:
        return self.labels.get(STATE_LABEL, "")

    @property
    def dead(self) -> bool:
        return self.deleting or self.phase in ("Failed", "Succeeded")

    def usable(self) -> bool:
        return self.ready and self.ip is not None and not self.dead


def pod_manifest(
    settings: KubernetesSettings,
    owner: dict[str, Any] | None,
    *,
    function: str | None = None,
    version: int | None = None,
    gateway: str | None = None,
    memory_bytes: int | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """The pod of an invoker: generic, or for one function version when `function` is set;
    `owner`: the reference to the object that owns every invoker pod."""
    s = settings
    labels = {APP_LABEL: APP, STATE_LABEL: "generic"}
    if function is not None:
        labels.update(
            {
                STATE_LABEL: "specialized",
                FUNCTION_LABEL: label_value(function),
                VERSION_LABEL: str(version),
                GATEWAY_LABEL: label_value(gateway or ""),
            }
        )
    memory = memory_bytes or s.generic_memory_bytes
    annotations = {MEMORY_ANNOTATION: str(memory)}
    if timeout_s is not None:
        annotations["ember.dev/timeout-s"] = f"{timeout_s:g}"
    metadata: dict[str, Any] = {
        "name": f"ember-invoker-{secrets.token_hex(5)}",
        "labels": labels,
        "annotations": annotations,
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    probe = {"tcpSocket": {"port": s.port}, "periodSeconds": 1, "failureThreshold": 3}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "automountServiceAccountToken": False,
            "serviceAccountName": s.service_account,
            "enableServiceLinks": False,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": s.stop_grace_s,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "invoker",
                    "image": s.image,
                    "command": INVOKER_COMMAND,
                    "env": [
                        {"name": "EMBER_INVOKER_HOST", "value": "0.0.0.0"},
                        {"name": "EMBER_INVOKER_PORT", "value": str(s.port)},
                        {"name": "EMBER_ENV_DIR", "value": ENV_DIR},
                    ],
                    "ports": [{"name": "invoker", "containerPort": s.port}],
                    "readinessProbe": probe,
                    "resources": {
                        "requests": {"cpu": s.cpu_request, "memory": _mebibytes(memory)},
                        "limits": {"cpu": s.cpu_limit, "memory": _mebibytes(memory)},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "envs", "mountPath": ENV_DIR},
                    ],
                }
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                {"name": "envs", "emptyDir": {"sizeLimit": _mebibytes(s.env_dir_bytes)}},
            ],
        },
    }
