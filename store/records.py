"""Plain records read from and written to the store: what the rest of Ember passes around."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol

import orjson

ActivationId = NewType("ActivationId", uuid.UUID)


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
            ),
        )

    @property
    def module(self) -> str:
        return self.filename.removesuffix(".py")


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
        return cls(function=row["function"], prewarm=row["prewarm"],
                   keep_alive_s=row["keep_alive_s"], min_warm=row["min_warm"],
                   max_instances=row["max_instances"])
