"""Plain records read from and written to the store: what the rest of Ember passes around."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol

import orjson

ActivationId = NewType("ActivationId", uuid.UUID)
_random = random.Random()


def new_id() -> ActivationId:
    """A time-ordered UUID (version 7 layout): 48 bits of milliseconds, then random bits
    (ids are not secrets: no syscall per call), then the version (7) and variant bits."""
    value = (time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80)
    made = object.__new__(uuid.UUID)  # as UUID(int=) makes it, less its checks (every call)
    object.__setattr__(made, "int", value & ~(0xF << 76 | 0x3 << 62) | (0x7 << 76 | 0x2 << 62))
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return ActivationId(made)


class Row(Protocol):
    """What `from_row` reads: an asyncpg Record, or any mapping by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(slots=True, frozen=True, kw_only=True)
class FunctionConfig:
    """What a deploy may set on a version. Sizes and durations are already converted."""

    entry: str = "handler"
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    memory_bytes: int = 256 * 1024 * 1024
    concurrency: int = 1
    max_attempts: int = 5
    """How many times an async invocation or event is tried before it is dead-lettered."""
    max_event_age_s: float = 86400.0
    """How long after its submission it may still be retried."""
    preimport: tuple[str, ...] = ()
    """Modules imported when an instance is specialized, before the function's own module."""
    network: str = "egress"
    """"egress": the internet, but no loopback or private address; "none": no network."""
    cpus: float = 1.0
    """CPU time per instance, in cores (a cgroup quota on one machine)."""
    style: str = "ember"
    """The platform the handler is written for (invoker.styles); "auto" only in a deploy
    request, before the import check says which."""
    style_options: Mapping[str, str] = field(default_factory=dict)
    """That style's settings, like {"event": "v1"} for lambda."""
    auth: str = "public"
    """"public": anyone may call it; "key": calls need an invoker key of its namespace."""
    secrets: tuple[str, ...] = ()
    """Secrets (of its namespace) whose values the instance gets as environment variables."""
    cors_origins: tuple[str, ...] = ()
    """Origins the gateway answers CORS requests (preflight included) for; "*" for any."""

    def access_json(self) -> dict[str, Any]:
        """The access settings as stored (the versions table's `access` column)."""
        return {"auth": self.auth, "secrets": [*self.secrets], "cors_origins": [*self.cors_origins]}


@dataclass(slots=True, frozen=True)
class Package:
    """What a deploy ships besides the main file: the other files (a zip of the function's
    directory, main file included) and the requirements, with the environment built for them."""

    archive: bytes | None = None
    requirements: str = ""
    env_hash: str | None = None
    lock: str = ""
    files: tuple[str, ...] = ()
    """The names in the archive."""


NO_PACKAGE = Package()


@dataclass(slots=True, frozen=True, kw_only=True)
class Version:
    """One immutable version of a function: its source and the configuration it runs with."""

    function: str
    version: int
    source: str
    sha256: str
    filename: str
    config: FunctionConfig
    created_at: dt.datetime
    package: Package = NO_PACKAGE

    @classmethod
    def from_row(cls, row: Row) -> Version:
        env = row["env"]
        return cls(
            function=row["function"],
            version=row["version"],
            source=row["source"],
            sha256=row["sha256"],
            filename=row["filename"],
            created_at=row["created_at"],
            config=FunctionConfig(
                entry=row["entry"],
                env=orjson.loads(env) if isinstance(env, str | bytes) else dict(env),
                timeout_s=row["timeout_s"],
                memory_bytes=row["memory_bytes"],
                concurrency=row["concurrency"],
                max_attempts=row["max_attempts"],
                max_event_age_s=row["max_event_age_s"],
                preimport=tuple(row["preimport"]),
                network=row["network"],
                cpus=row["cpus"],
                style=row["style"],
                style_options=_json(row["style_options"]),
                **_access(row),
            ),
            package=Package(
                archive=row["archive"],
                requirements=row["requirements"],
                env_hash=row["env_hash"],
                lock=row["lock"],
                files=tuple(row["files"]),
            )
            if row["files"] or row["env_hash"] is not None
            else NO_PACKAGE,
        )

    @property
    def module(self) -> str:
        return self.filename.removesuffix(".py")


def code_digest(code: bytes, env_hash: str | None, preimport: tuple[str, ...]) -> str:
    """A version's sha256: what it runs (the archive, else the source), its environment and
    the modules it preimports. Checked again before the code is pushed into an instance."""
    digest = hashlib.sha256(code)
    digest.update(f"\0{env_hash or ''}\0{','.join(preimport)}".encode())
    return digest.hexdigest()


@dataclass(slots=True, frozen=True, kw_only=True)
class Function:
    name: str
    active_version: int
    latest_version: int
    version_count: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: Row) -> Function:
        return cls(
            name=row["name"],
            active_version=row["active_version"],
            latest_version=row["latest_version"],
            version_count=row["version_count"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class Activation:
    """The record of one call: written in batches, off the request path."""

    id: ActivationId
    function: str
    version: int
    started_at: dt.datetime
    duration_ms: float
    cold: bool
    status: str
    http_status: int
    error: Mapping[str, Any] | None = None
    logs: str = ""

    @classmethod
    def from_row(cls, row: Row) -> Activation:
        error = row["error"]
        return cls(
            id=ActivationId(row["id"]),
            function=row["function"],
            version=row["version"],
            started_at=row["started_at"],
            duration_ms=row["duration_ms"],
            cold=row["cold"],
            status=row["status"],
            http_status=row["http_status"],
            error=orjson.loads(error) if isinstance(error, str | bytes) else error,
            logs=row["logs"],
        )

    def as_row(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.function,
            self.version,
            self.started_at,
            self.duration_ms,
            self.cold,
            self.status,
            self.http_status,
            dict(self.error) if self.error is not None else None,
            self.logs,
        )


ACTIVATION_COLUMNS = (
    "id",
    "function",
    "version",
    "started_at",
    "duration_ms",
    "cold",
    "status",
    "http_status",
    "error",
    "logs",
)


@dataclass(slots=True, frozen=True, kw_only=True)
class PolicyRow:
    """A stored policy override: None fields inherit. `function` is "*" for the default."""

    function: str
    prewarm: str | None = None
    keep_alive_s: float | None = None
    min_warm: int | None = None
    max_instances: int | None = None

    @classmethod
    def from_row(cls, row: Row) -> PolicyRow:
        return cls(
            function=row["function"],
            prewarm=row["prewarm"],
            keep_alive_s=row["keep_alive_s"],
            min_warm=row["min_warm"],
            max_instances=row["max_instances"],
        )


def _access(row: Row) -> dict[str, Any]:
    """A version's access settings, from its `access` column ({} before tenancy)."""
    try:
        access = _json(row["access"]) or {}
    except KeyError:  # a row of a query that does not read it
        access = {}
    auth, secrets = str(access.get("auth", "public")), tuple(access.get("secrets", ()))
    return {"auth": auth, "secrets": secrets, "cors_origins": tuple(access.get("cors_origins", ()))}


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass(slots=True, frozen=True, kw_only=True)
class NewDelivery:
    """What an async invocation submits. `meta` carries the HTTP request's method, path, query,
    headers and content type, so the handler sees the same context as for a direct call."""

    id: ActivationId
    function: str
    version: int | None
    payload: bytes
    meta: Mapping[str, Any]
    source: str = "async"
    idempotency_key: str | None = None
    trigger_id: int | None = None
    run_at: dt.datetime | None = None


@dataclass(slots=True, frozen=True)
class Event:
    """An event to publish: each subscriber of `topic` gets `payload` as its event."""

    id: uuid.UUID
    topic: str
    payload: bytes
    content_type: str = "application/json"


@dataclass(slots=True, frozen=True, kw_only=True)
class Claimed:
    """A delivery a worker has taken: run it, then report the outcome with `attempt`."""

    id: ActivationId
    function: str
    version: int | None
    source: str
    trigger_id: int | None
    payload: bytes
    meta: Mapping[str, Any]
    attempt: int
    claim: int
    """Counts every claim of the delivery: its outcome is recorded only under this claim."""
    created_at: dt.datetime
    redelivered: bool

    @classmethod
    def from_row(cls, row: Row) -> Claimed:
        return cls(
            id=ActivationId(row["id"]),
            function=row["function"],
            version=row["version"],
            source=row["source"],
            trigger_id=row["trigger_id"],
            payload=row["payload"],
            meta=_json(row["meta"]),
            attempt=row["attempts"],
            claim=row["claims"],
            created_at=row["created_at"],
            redelivered=row["redelivered"],
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class Outcome:
    """How one attempt ended. `status`: succeeded, dead, or pending (retry at `run_at`);
    `uncounted`: the attempt does not count (the platform was out of capacity). `claim` is the
    claim it ran under (`Claimed.claim`)."""

    id: ActivationId
    claim: int
    status: str
    run_at: dt.datetime | None = None
    http_status: int | None = None
    result: bytes | None = None
    result_type: str | None = None
    error: Mapping[str, Any] | None = None
    logs: str = ""
    activation: ActivationId | None = None
    uncounted: bool = False


@dataclass(slots=True, frozen=True, kw_only=True)
class Delivery:
    """A delivery as stored: what `fn activation ID` and `fn dlq` show."""

    id: ActivationId
    function: str
    version: int | None
    source: str
    trigger_id: int | None
    event_id: uuid.UUID | None
    idempotency_key: str | None
    payload: bytes
    meta: Mapping[str, Any]
    status: str
    attempts: int
    redeliveries: int
    redrives: int
    run_at: dt.datetime
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    http_status: int | None
    result: bytes | None
    result_type: str | None
    error: Mapping[str, Any] | None
    logs: str
    last_activation: uuid.UUID | None

    @classmethod
    def from_row(cls, row: Row) -> Delivery:
        return cls(
            id=ActivationId(row["id"]),
            function=row["function"],
            version=row["version"],
            source=row["source"],
            trigger_id=row["trigger_id"],
            event_id=row["event_id"],
            idempotency_key=row["idempotency_key"],
            payload=row["payload"],
            meta=_json(row["meta"]),
            status=row["status"],
            attempts=row["attempts"],
            redeliveries=row["redeliveries"],
            redrives=row["redrives"],
            run_at=row["run_at"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            http_status=row["http_status"],
            result=row["result"],
            result_type=row["result_type"],
            error=_json(row["error"]),
            logs=row["logs"],
            last_activation=row["last_activation"],
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class Topic:
    name: str
    created_at: dt.datetime
    subscribers: int

    @classmethod
    def from_row(cls, row: Row) -> Topic:
        return cls(name=row["name"], created_at=row["created_at"], subscribers=row["subscribers"])


@dataclass(slots=True, frozen=True, kw_only=True)
class Trigger:
    """A function's topic subscription (`topic`), schedule (`cron`), table watch (`table`) or
    broker source (`nats`, `rabbitmq`, `redis`, `mqtt`, `kafka`: what to consume in
    `source_options`, the broker's URL in `source_url`). `database_url` and `source_url` are
    secrets: never shown, only masked."""

    id: int
    function: str
    kind: str
    topic: str | None = None
    cron: str | None = None
    timezone: str | None = None
    next_fire_at: dt.datetime | None = None
    table_name: str | None = None
    operations: tuple[str, ...] = ()
    database_url: str | None = None
    created_at: dt.datetime | None = None
    source_options: Mapping[str, Any] = field(default_factory=dict)
    source_url: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> Trigger:
        return cls(
            id=row["id"],
            function=row["function"],
            kind=row["kind"],
            topic=row["topic"],
            cron=row["cron"],
            timezone=row["timezone"],
            next_fire_at=row["next_fire_at"],
            table_name=row["table_name"],
            operations=tuple(row["operations"] or ()),
            database_url=row["database_url"],
            created_at=row["created_at"],
            source_options=dict(row["source_options"] or {}),
            source_url=row["source_url"],
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class Environment:
    """An environment built from a set of requirements, stored in `chunks` pieces."""

    hash: str
    requirements: str
    lock: str
    python: str
    size_bytes: int
    unpacked_bytes: int
    chunks: int
    build_s: float

    @classmethod
    def from_row(cls, row: Row) -> Environment:
        return cls(
            hash=row["hash"],
            requirements=row["requirements"],
            lock=row["lock"],
            python=row["python"],
            size_bytes=row["size_bytes"],
            unpacked_bytes=row["unpacked_bytes"],
            chunks=row["chunks"],
            build_s=row["build_s"],
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class Build:
    id: int
    function: str
    env_hash: str
    status: str
    log: str
    duration_s: float
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: Row) -> Build:
        return cls(
            id=row["id"],
            function=row["function"],
            env_hash=row["env_hash"],
            status=row["status"],
            log=row["log"],
            duration_s=row["duration_s"],
            created_at=row["created_at"],
        )
