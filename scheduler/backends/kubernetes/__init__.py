"""The Kubernetes backend: invoker instances are pods. The only package that speaks Kubernetes.

`PodPool` keeps `generic_pool_size` generic invoker pods (the runtime image, labelled
`ember.dev/state=generic`) ready in the functions namespace. `claim` hands a ready generic pod to
a gateway for a function version and relabels it (`specialized`, function, version, gateway):
the gateway then pushes the code over the invoker's own protocol, so a cold start costs a label
patch and an import, not a pod start. When no generic pod is ready, or the function needs more
memory than a generic pod has, `claim` creates a specialized pod directly and waits for it. The
pool refills off the request path.

Pod state comes from one list and a watch from its resourceVersion; an expired watch (410
Gone) is answered with a fresh list. A pod that fails, is evicted or is deleted by someone else
is reported to `on_gone`. On start the pool adopts the invoker pods that exist (generic ones
count towards the pool; specialized ones keep their gateway), so a restart neither leaks nor
duplicates pods. Every call goes through the official client, on threads: the client is
synchronous.

- `pods`: what an invoker pod is (labels, settings, the manifest, `PodView`); plain data.
- `api`: the client, calls on threads, the permissions needed, errors translated.
- `pool`: `PodPool`, the list, the watch, the generic pool and claims.

Errors: `KubernetesError` (a `BackendError`), with `Unreachable` and `Forbidden` (which names
the missing permission) below it.
"""

from scheduler.backends.kubernetes.api import (
    REQUIRED_PERMISSIONS,
    Forbidden,
    KubernetesError,
    Unreachable,
)
from scheduler.backends.kubernetes.pods import (
    APP,
    APP_LABEL,
    FUNCTION_LABEL,
    GATEWAY_LABEL,
    INVOKER_COMMAND,
    MEMORY_ANNOTATION,
    STATE_LABEL,
    VERSION_LABEL,
    KubernetesSettings,
    PodView,
    label_value,
)
from scheduler.backends.kubernetes.pool import GoneCallback, PodPool

__all__ = [
    "APP",
    "APP_LABEL",
    "FUNCTION_LABEL",
    "GATEWAY_LABEL",
    "INVOKER_COMMAND",
    "MEMORY_ANNOTATION",
    "REQUIRED_PERMISSIONS",
    "STATE_LABEL",
    "VERSION_LABEL",
    "Forbidden",
    "GoneCallback",
    "KubernetesError",
    "KubernetesSettings",
    "PodPool",
    "PodView",
    "Unreachable",
    "label_value",
]
