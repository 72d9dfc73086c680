"""Settings of a running platform, read once from the environment (`FN_*`, `DATABASE_URL`).

The `fn up` flags set these variables, so a flag and its variable are the same setting.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.units import ConfigError, parse_duration_s, parse_size_bytes
from scheduler.backends.isolation import IsolationSettings
from scheduler.scheduler import PoolSettings


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where `fn up` keeps its token, Postgres data and address: `$FN_STATE_DIR`, else
    `$XDG_STATE_HOME/ember`, else `~/.local/state/ember`."""
    if env.get("FN_STATE_DIR"):
        return Path(env["FN_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ember"


@dataclass(slots=True, frozen=True, kw_only=True)
class EventSettings:
    """How async invocations and events are delivered (see docs/events.md)."""

    workers: bool = True
    """Run delivery workers, schedules and table relays in this gateway (FN_DELIVERIES=0: no)."""
    concurrency: int = 64
    """Deliveries one gateway runs at once (FN_DELIVERY_CONCURRENCY)."""
    lease_margin_s: float = 120.0
    """A claimed delivery is leased for its function's timeout plus this (FN_DELIVERY_LEASE),
    which covers waiting for an instance (the queue timeout, a cold start) and recording the
    outcome; if the gateway dies, another takes the delivery over when the lease ends."""
    retry_base_s: float = 1.0
    """First retry delay (FN_RETRY_BASE); doubled each attempt, with jitter."""
    retry_max_s: float = 600.0
    """Longest retry delay (FN_RETRY_MAX)."""
    poll_s: float = 1.0
    """How often workers look for due work without a notification (FN_DELIVERY_POLL)."""
    retention_s: float = 7 * 86400.0
    """How long succeeded deliveries are kept for `fn activation` (FN_DELIVERY_RETENTION)."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    """Address the gateway listens on (FN_HOST). Default: loopback only."""
    port: int = 8080
    """Port of the gateway (FN_PORT); 0 picks a free one."""
    state_dir: Path = field(default_factory=default_state_dir)
    """Token, embedded Postgres data and the gateway address file (FN_STATE_DIR)."""
    database_url: str | None = None
    """An external Postgres (DATABASE_URL); without it an embedded one runs in the state dir."""
    token: str | None = None
    """The admin API token (FN_TOKEN); default: created once and kept in <state_dir>/token."""
    max_body_bytes: int = 6 << 20
    """Largest request body accepted (FN_MAX_BODY); larger gets 413. Default 6 MiB, as Lambda."""
    max_source_bytes: int = 10 << 20
    """Largest function code accepted at deploy, all files zipped (FN_MAX_SOURCE)."""
    max_env_bytes: int = 1 << 30
    """Largest environment a build may produce, unpacked (FN_MAX_ENV)."""
    build_timeout_s: float = 600.0
    """How long installing a function's requirements may take (FN_BUILD_TIMEOUT)."""
    zygote: bool = True
    """Fork instances from a pre-imported zygote (FN_ZYGOTE=0: start a fresh interpreter each)."""
    shutdown_timeout_s: float = 10.0
    """How long in-flight calls may run on at shutdown before they are cancelled."""
    time_scale: float = 1.0
    """Policy seconds per real second (FN_TIME_SCALE): above 1 only to replay a
    time-compressed trace (bench/replay.py), so that keep-alives and the histogram's 1-minute
    bins compress with it."""
    backend: str = "local"
    """Where instances run (EMBER_BACKEND): `local` processes, or `kubernetes` pods handed out
    by the scheduler process (docs/kubernetes.md)."""
    scheduler_url: str | None = None
    """The scheduler process, with EMBER_BACKEND=kubernetes (EMBER_SCHEDULER_URL); default:
    the address the scheduler leader writes to Postgres, looked up again after a failover."""
    scheduler_token: str | None = None
    """The token the scheduler process expects (FN_SCHEDULER_TOKEN)."""
    gateway_id: str = field(default_factory=socket.gethostname)
    """This gateway's name towards the scheduler (EMBER_GATEWAY_ID); default: the host name,
    which on Kubernetes is the pod name."""
    pool: PoolSettings = field(default_factory=PoolSettings)
    events: EventSettings = field(default_factory=EventSettings)
    isolation: IsolationSettings = field(default_factory=IsolationSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        defaults = cls()
        pool = PoolSettings(
            keep_alive_s=parse_duration_s(
                env.get("FN_KEEP_ALIVE", "10m"), "FN_KEEP_ALIVE", maximum_s=7 * 86400
            ),
            generic_pool_size=int(env.get("FN_GENERIC_POOL", "2")),
            max_instances=int(env.get("FN_MAX_INSTANCES", "20")),
            max_queue=int(env.get("FN_MAX_QUEUE", "100")),
            max_response_bytes=parse_size_bytes(
                env.get("FN_MAX_RESPONSE", "6Mi"), "FN_MAX_RESPONSE", minimum=1024
            ),
        )
        d = EventSettings()
        events = EventSettings(
            workers=env.get("FN_DELIVERIES", "1") not in ("0", "false", "no"),
            concurrency=int(env.get("FN_DELIVERY_CONCURRENCY", str(d.concurrency))),
            lease_margin_s=parse_duration_s(
                env.get("FN_DELIVERY_LEASE", d.lease_margin_s), "FN_DELIVERY_LEASE"
            ),
            retry_base_s=parse_duration_s(
                env.get("FN_RETRY_BASE", d.retry_base_s), "FN_RETRY_BASE"
            ),
            retry_max_s=parse_duration_s(env.get("FN_RETRY_MAX", d.retry_max_s), "FN_RETRY_MAX"),
            poll_s=parse_duration_s(env.get("FN_DELIVERY_POLL", d.poll_s), "FN_DELIVERY_POLL"),
            retention_s=parse_duration_s(
                env.get("FN_DELIVERY_RETENTION", d.retention_s),
                "FN_DELIVERY_RETENTION",
                maximum_s=365 * 86400,
            ),
        )
        backend = env.get("EMBER_BACKEND", "local")
        if backend not in ("local", "kubernetes"):
            raise ConfigError("EMBER_BACKEND", backend, "local or kubernetes")
        if backend == "kubernetes":
            for name in ("FN_SCHEDULER_TOKEN", "DATABASE_URL"):
                if not env.get(name):
                    raise ConfigError(
                        name, "", "set with EMBER_BACKEND=kubernetes (deploy/ sets it)"
                    )
            # The scheduler process keeps the generic pods; a gateway holds specialized ones.
            pool = replace(pool, generic_pool_size=0)
        isolation = isolation_from_env(env)
        time_scale = float(env.get("FN_TIME_SCALE", "1"))
        if not 1 <= time_scale <= 10_000:
            raise ConfigError("FN_TIME_SCALE", time_scale, "a number from 1 to 10000")
        return cls(
            time_scale=time_scale,
            events=events,
            isolation=isolation,
            host=env.get("FN_HOST", defaults.host),
            port=int(env.get("FN_PORT", str(defaults.port))),
            state_dir=default_state_dir(env),
            # Secrets written with `echo` or `openssl rand > file` end with a newline.
            database_url=env.get("DATABASE_URL", "").strip() or None,
            token=env.get("FN_TOKEN", "").strip() or None,
            max_body_bytes=parse_size_bytes(
                env.get("FN_MAX_BODY", defaults.max_body_bytes), "FN_MAX_BODY", minimum=1024
            ),
            zygote=env.get("FN_ZYGOTE", "1") not in ("0", "false", "no"),
            max_source_bytes=parse_size_bytes(
                env.get("FN_MAX_SOURCE", defaults.max_source_bytes), "FN_MAX_SOURCE", minimum=1024
            ),
            max_env_bytes=parse_size_bytes(
                env.get("FN_MAX_ENV", defaults.max_env_bytes), "FN_MAX_ENV", minimum=1 << 20
            ),
            build_timeout_s=parse_duration_s(
                env.get("FN_BUILD_TIMEOUT", defaults.build_timeout_s), "FN_BUILD_TIMEOUT"
            ),
            pool=pool,
            backend=backend,
            scheduler_url=env.get("EMBER_SCHEDULER_URL") or None,
            scheduler_token=env.get("FN_SCHEDULER_TOKEN", "").strip() or None,
            gateway_id=env.get("EMBER_GATEWAY_ID") or socket.gethostname(),
        )


def isolation_from_env(env: Mapping[str, str]) -> IsolationSettings:
    """FN_ISOLATION, FN_UID_RANGE, FN_INSTANCE_TMP/PIDS/NOFILE and FN_HIDE (docs/security.md)."""
    d = IsolationSettings()
    mode = env.get("FN_ISOLATION", d.mode).strip().lower()
    if mode not in ("auto", "strict", "off"):
        raise ConfigError("FN_ISOLATION", mode, "auto, strict or off")
    first, count = d.uid_first, d.uid_count
    if env.get("FN_UID_RANGE"):
        low, sep, high = env["FN_UID_RANGE"].partition("-")
        if not (
            sep
            and low.strip().isdigit()
            and high.strip().isdigit()
            and 1000 <= int(low) <= int(high) < 2**32 - 1
        ):
            raise ConfigError(
                "FN_UID_RANGE",
                env["FN_UID_RANGE"],
                "FIRST-LAST uids, like 100000-165535 (not below 1000)",
            )
        first, count = int(low), int(high) - int(low) + 1

    def whole(name: str, default: int, low: int, high: int) -> int:
        raw = env.get(name, str(default)).strip()
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ConfigError(name, raw, f"a whole number from {low} to {high}")
        return int(raw)

    paths: dict[str, tuple[str, ...]] = {}
    for name in ("FN_HIDE", "FN_EXPOSE"):
        paths[name] = tuple(p for p in env.get(name, "").split(":") if p)
        for path in paths[name]:
            if not path.startswith("/"):
                raise ConfigError(name, path, "absolute paths separated by colons")
    return IsolationSettings(
        mode=mode,
        uid_first=first,
        uid_count=count,
        tmp_bytes=parse_size_bytes(
            env.get("FN_INSTANCE_TMP", d.tmp_bytes), "FN_INSTANCE_TMP", minimum=1 << 20
        ),
        pids_max=whole("FN_INSTANCE_PIDS", d.pids_max, 8, 1_000_000),
        nofile=whole("FN_INSTANCE_NOFILE", d.nofile, 64, 1_048_576),
        hide=paths["FN_HIDE"],
        expose=paths["FN_EXPOSE"],
    )
