"""The warm pool's settings: one frozen record, each field with its unit, default and why."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.policy import DEFAULT_KEEP_ALIVE_S


@dataclass(slots=True, frozen=True, kw_only=True)
class PoolSettings:
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    """Idle seconds before a specialized instance stops (scale to zero). Default: 10 min, as
    OpenWhisk."""
    generic_pool_size: int = 2
    """Prewarmed generic instances kept ready, so a cold start is a specialization (ms), not a
    process start."""
    max_instances: int = 20
    """Instances per function version at most."""
    max_total_instances: int = 0
    """Instances on this node at most, generic ones included (FN_MAX_INSTANCES_TOTAL); 0: one
    per 64 MiB of `max_total_memory_bytes`. When full, a call evicts the least valued idle
    instance (`scheduler.capacity`)."""
    max_total_memory_bytes: int = 0
    """The memory limits of this node's instances added up at most (FN_MAX_INSTANCES_MEMORY);
    0: three quarters of the machine's memory (or of the platform's cgroup limit)."""
    max_queue: int = 100
    """Calls per function version that may wait for a slot; more get 429."""
    queue_timeout_s: float = 30.0
    """How long a call waits for a slot before it gets 503."""
    specialize_timeout_s: float = 30.0
    """How long importing a function's module may take."""
    stop_grace_s: float = 2.0
    """Seconds between SIGTERM and SIGKILL when stopping an instance."""
    max_start_backoff_s: float = 30.0
    """After a version fails to start, calls fail fast for 0.5 s, doubling per failure up to
    this, instead of restarting it in a loop (like Kubernetes' crash-loop back-off)."""
    template_slow_import_s: float = 0.03
    """A version whose import took more CPU time than this (FN_TEMPLATE_SLOW_IMPORT) gets its
    template after its first instance, not after its second (local backend, FN_TEMPLATES): a
    function importing requests or numpy then forks at its very first cold start again.
    Default 30 ms: a trivial function imports in a few ms, requests in 50 and more."""
    max_response_bytes: int = 6 << 20
    """Largest response body a handler may return (FN_MAX_RESPONSE); a larger one is an error
    (502 response_too_large), and the gateway never buffers more than this per call."""
