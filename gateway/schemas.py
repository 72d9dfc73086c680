"""The JSON the API takes and answers, as TypedDicts: the handlers' `*_json` helpers return
them (so mypy holds the handlers to them) and `api_spec` turns them into the OpenAPI document's
schemas (so the document is what the handlers do). Requests name every key a handler reads.

(No `from __future__ import annotations` here: TypedDict reads `NotRequired` at class creation.)"""

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NotRequired, TypedDict

Name = Annotated[str, ("pattern", "^[a-z][a-z0-9_-]{0,62}$")]
Limit = Annotated[str, ("pattern", "^[0-9]{1,4}$"), ("description", "1-1000 (default 20)")]


class ErrorDetail(TypedDict):
    code: str
    message: str


class Error(TypedDict):
    """Every error the gateway answers: a code to match on and a message saying what next."""

    error: ErrorDetail


class Health(TypedDict):
    status: str
    isolation: NotRequired[dict[str, Any]]


class Instances(TypedDict):
    total: int
    busy: int
    pids: list[int]


class FunctionJSON(TypedDict):
    name: str
    namespace: str
    active_version: int | None
    latest_version: int
    versions: int
    created_at: str
    updated_at: str
    instances: Instances


class FunctionList(TypedDict):
    functions: list[FunctionJSON]


class VersionJSON(TypedDict):
    function: str
    namespace: str
    version: int
    sha256: str
    filename: str
    handler: str
    style: str
    style_options: dict[str, Any]
    env: dict[str, str]
    timeout_s: float
    memory_bytes: int
    concurrency: int
    max_attempts: int
    max_event_age_s: float
    network: str
    cpus: float
    auth: str
    """public, or key (an invoker key of its namespace)"""
    secrets: list[str]
    """The names of the secrets it reads (never their values)."""
    cors_origins: list[str]
    created_at: str
    preimport: list[str]
    requirements: str
    environment: str | None
    lock: str | None
    files: list[str]
    active: NotRequired[bool]
    style_detected: NotRequired[bool]
    added_requirements: NotRequired[list[str]]


class FunctionDetail(FunctionJSON):
    active: VersionJSON


class VersionList(TypedDict):
    versions: list[VersionJSON]


class DeployRequest(TypedDict):
    """A deploy: the code (`source`, or a base64 zip in `archive`) and its settings."""

    name: Name
    source: NotRequired[str]
    archive: NotRequired[str | None]
    filename: NotRequired[str]
    requirements: NotRequired[str | None]
    entry: NotRequired[str]
    style: NotRequired[str]
    style_options: NotRequired[dict[str, Any]]
    env: NotRequired[dict[str, str]]
    timeout: NotRequired[str | float]
    memory: NotRequired[str | int]
    concurrency: NotRequired[int | str]
    max_attempts: NotRequired[int | str]
    max_event_age: NotRequired[str | float]
    preimport: NotRequired[list[str] | str]
    network: NotRequired[Literal["egress", "none"]]
    cpus: NotRequired[float | str]
    auth: NotRequired[Literal["public", "key"] | None]
    secrets: NotRequired[list[Name] | None]
    cors_origins: NotRequired[list[str] | None]


class RollbackRequest(TypedDict):
    to: NotRequired[int | None]


class RolledBack(TypedDict):
    function: str
    active_version: int


class Deleted(TypedDict):
    deleted: Any


class BuildJSON(TypedDict):
    id: int
    function: str
    environment: str
    status: str
    duration_s: float
    created_at: str
    log: str


class BuildList(TypedDict):
    builds: list[BuildJSON]


class LimitQuery(TypedDict):
    limit: NotRequired[Limit]


class ActivationJSON(TypedDict):
    id: str
    function: str
    namespace: str
    version: int
    started_at: str
    duration_ms: float
    cold: bool
    status: str
    http_status: int | None
    error: Mapping[str, Any] | None
    logs: str


class ActivationList(TypedDict):
    activations: list[ActivationJSON]


DeliveryJSON = TypedDict(
    "DeliveryJSON",
    {
        "id": str,
        "async": bool,
        "function": str,
        "namespace": str,
        "version": int | None,
        "source": str,
        "status": str,
        "attempts": int,
        "redeliveries": int,
        "redrives": int,
        "created_at": str | None,
        "started_at": str | None,
        "finished_at": str | None,
        "next_attempt_at": str | None,
        "http_status": int | None,
        "result": Any,
        "error": Mapping[str, Any] | None,
        "logs": str | None,
        "last_activation": str | None,
        "trigger_id": int | None,
        "event_id": str | None,
        "idempotency_key": str | None,
        "payload": NotRequired[Any],
    },
)
"""An async call or event delivery: its status, attempts, result or error, logs."""


class TopicCreated(TypedDict):
    topic: str
    created: bool


class TopicJSON(TypedDict):
    name: str
    subscribers: int
    created_at: str


class TopicList(TypedDict):
    topics: list[TopicJSON]


class Published(TypedDict):
    event_id: str
    topic: str
    deliveries: int
    status: Literal["accepted", "duplicate"]


class BatchEvent(TypedDict):
    topic: str
    data: Any


class PublishedBatch(TypedDict):
    events: list[Published]


class TriggerRequest(TypedDict):
    """Exactly one of `topic`, `cron` (with `timezone`) or `table` (with `on`, `database`)."""

    topic: NotRequired[str]
    cron: NotRequired[str]
    timezone: NotRequired[str]
    table: NotRequired[str]
    on: NotRequired[list[str] | str]
    database: NotRequired[str]


class TriggerJSON(TypedDict):
    id: int
    function: str
    namespace: str
    kind: str
    created_at: str | None
    topic: NotRequired[str | None]
    cron: NotRequired[str | None]
    timezone: NotRequired[str | None]
    next_fire_at: NotRequired[str | None]
    table: NotRequired[str | None]
    on: NotRequired[list[str]]
    database: NotRequired[str]
    # broker triggers (events/sources/): the broker's options, a one-line description, the URL
    # masked
    source: NotRequired[str]
    url: NotRequired[str]
    subject: NotRequired[str]
    durable: NotRequired[str]
    stream: NotRequired[str]
    queue: NotRequired[str]
    exchange: NotRequired[str]
    routing_key: NotRequired[str]
    group: NotRequired[str]
    qos: NotRequired[int]
    client_id: NotRequired[str]


class TriggerList(TypedDict):
    triggers: list[TriggerJSON]


class TriggerDeleted(TypedDict):
    deleted: TriggerJSON


class TriggersQuery(TypedDict):
    function: NotRequired[str]


class DeleteTriggerQuery(TypedDict):
    force: NotRequired[Literal["1", "true", "yes", "0", "false", "no"]]


class DeadQuery(TypedDict):
    function: NotRequired[str]
    limit: NotRequired[Limit]


class DeadList(TypedDict):
    dead: list[DeliveryJSON]


class RedriveRequest(TypedDict):
    ids: NotRequired[list[str]]
    function: NotRequired[str]


class Redriven(TypedDict):
    redriven: list[str]


class PolicyRequest(TypedDict):
    """Set some of the warm-pool settings; `unset` returns the named ones to the default."""

    prewarm: NotRequired[Literal["adaptive", "fixed", "off", "histogram", "histogram-cost"]]
    keep_alive: NotRequired[str | float]
    min_warm: NotRequired[Annotated[int, ("minimum", 0), ("maximum", 10000)] | str]
    max_instances: NotRequired[Annotated[int, ("minimum", 1), ("maximum", 10000)] | str]
    unset: NotRequired[list[str] | str]


class PolicyJSON(TypedDict):
    function: str
    prewarm: str
    keep_alive_s: float
    min_warm: int
    max_instances: int
    set: dict[str, Any]
    instances: NotRequired[int]


class PolicyList(TypedDict):
    default: PolicyJSON
    functions: list[PolicyJSON]


class Queued(TypedDict):
    """An async call (`Prefer: respond-async`), committed before this answer."""

    activation_id: str
    status: str


Duration = Annotated[str, ("pattern", "^[0-9]{1,6}(ms|s|m|h|d)?$"), ("description", "like 10m")]


class LogsQuery(TypedDict):
    since: NotRequired[Duration]
    limit: NotRequired[Annotated[str, ("pattern", "^[0-9]{1,4}$")]]
    follow: NotRequired[Literal["0", "1", "true", "false"]]


class StatsQuery(TypedDict):
    since: NotRequired[Duration]


class SimulateQuery(TypedDict):
    since: NotRequired[Duration]
    policy: NotRequired[str]


class StatsPoint(TypedDict):
    at: str
    calls: int
    errors: int
    cold: int
    warm: int
    p50_ms: float
    p99_ms: float


class PolicyInForce(TypedDict):
    prewarm: str
    keep_alive_s: float
    min_warm: int
    max_instances: int


class FunctionStats(TypedDict):
    """A function's calls in a window (and over time in buckets of `bucket_s`), its warm
    instances now and the policy in force."""

    function: str
    namespace: str
    bucket_s: int
    calls: int
    errors: int
    cold: int
    warm: int
    p50_ms: float | None
    p99_ms: float | None
    series: list[StatsPoint]
    warm_instances: int
    busy_instances: int
    policy: PolicyInForce


class InstanceJSON(TypedDict):
    id: str
    state: str
    function: str | None
    namespace: str | None
    version: int | None
    busy: int
    calls: int
    idle_s: float | None
    pid: int | None
    rss_bytes: int | None


class PoolJSON(TypedDict):
    generic: int
    specialized: int
    starting: int
    idle_memory_bytes: int
    reserved_memory_bytes: int
    instances: list[InstanceJSON]


class SimulatedPolicy(TypedDict):
    policy: str
    calls: int
    cold: int
    starts: int
    cold_rate: float
    idle_gb_s: float


class Simulation(TypedDict):
    function: str
    namespace: str
    since: str
    calls: int
    results: list[SimulatedPolicy]


class TrustRequest(TypedDict):
    modules: NotRequired[list[Annotated[str, ("pattern", "^[A-Za-z_][A-Za-z0-9_.]*$")]] | None]


class TrustedEnvironmentJSON(TypedDict):
    """A trusted environment and its zygote on this node (state: ready, making, not made)."""

    hash: str
    modules: list[str]
    requirements: str
    lock: NotRequired[str]
    """Every package installed: what trusting the environment trusts."""
    state: str
    trusted_at: NotRequired[str]
    pid: NotRequired[int | None]
    imported: NotRequired[list[str]]
    skipped: NotRequired[dict[str, str]]
    pss_bytes: NotRequired[int]
    spare: NotRequired[bool]
    failure: NotRequired[str | None]
    attempts: NotRequired[int]


class TrustedEnvironmentList(TypedDict):
    environments: list[TrustedEnvironmentJSON]


class UntrustedEnvironment(TypedDict):
    hash: str
    trusted: bool
