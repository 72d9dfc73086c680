"""Settings of a running platform, read once from the environment (`FN_*`, `DATABASE_URL`).

The `fn up` flags set these variables, so a flag and its variable are the same setting.
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from config.env import Env
from config.units import ConfigError
from events.settings import EventSettings
from gateway.retention import RetentionSettings, retention_from_env
from scheduler.backends.isolation import IsolationSettings
from scheduler.scheduler import PoolSettings


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where `fn up` keeps its token, Postgres data and address: `$FN_STATE_DIR`, else
    `$XDG_STATE_HOME/ember`, else `~/.local/state/ember`."""
    if env.get("FN_STATE_DIR"):
        return Path(env["FN_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ember"


def default_max_connections() -> int:
    """10,000 open connections, or half the open-files limit when that is lower: the other half
    stays for instances, Postgres and files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(10_000, soft // 2))


DASHBOARD_CONNECTIONS = 256
"""Open connections to the dashboard's port at most (`Settings.dashboard_http`)."""


@dataclass(slots=True, frozen=True, kw_only=True)
class HttpSettings:
    """Limits on client connections (gateway/connections.py): what a slow or hostile client
    may hold. A connection waits for a request (idle), receives its headers, then its body."""

    header_timeout_s: float = 10.0
    """From the first byte of a request to the end of its headers (FN_HEADER_TIMEOUT); later,
    408 and the connection is closed. Default 10 s: a client sends its headers in one packet."""
    body_timeout_s: float = 60.0
    """From the end of the headers to the end of the body (FN_BODY_TIMEOUT); later, 408 and
    the connection is closed. Default 60 s: 6 MiB at 100 KB/s."""
    idle_timeout_s: float = 75.0
    """How long a connection may wait for its next request (FN_IDLE_TIMEOUT), the first one
    included. Default 75 s (nginx's), longer than clients keep idle connections."""
    write_timeout_s: float = 60.0
    """From the handler's answer to the end of writing the response (FN_WRITE_TIMEOUT); later
    the connection is closed (a client that does not read). Default 60 s: 6 MiB at 100 KB/s."""
    max_connections: int = field(default_factory=default_max_connections)
    """Open client connections at most (FN_MAX_CONNECTIONS); one more closes the connection
    that has waited longest for a request, else the one stalled longest on a body that does not
    come or a response that is not read, or, when all are running handlers, gets 503. Default
    10,000, or half the open-files limit when that is lower."""


@dataclass(slots=True, frozen=True, kw_only=True)
class RoutingSettings:
    """Sending each function's calls to its home gateway, when several share one Postgres."""

    enabled: bool = True
    """Send calls to the function's home gateway, and be a home (FN_ROUTE_CALLS). Off (0):
    this gateway serves every call it gets with its own instances, as before."""
    advertise_url: str | None = None
    """The URL peers send calls to (EMBER_GATEWAY_URL); default: the address the gateway
    listens on, 127.0.0.1 when that is every address. deploy/ sets http://POD_IP:8080."""
    refresh_s: float = 1.0
    """How often the list of homes is read from Postgres (FN_ROUTE_REFRESH): how long a
    joining or a stopping gateway takes to be seen."""
    connect_timeout_s: float = 1.0
    """How long to wait for a home to take a connection before it is taken for dead
    (FN_ROUTE_CONNECT_TIMEOUT); the call then goes to the next home."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    """Address the gateway listens on (FN_HOST). Default: loopback only."""
    port: int = 8080
    """Port of the gateway (FN_PORT); 0 picks a free one."""
    dashboard_port: int | None = None
    """Port of the dashboard (FN_DASHBOARD_PORT): an origin of its own, so that no function's
    page (`/fn/...`, served on the gateway's port) can script it. None: the gateway's port + 1
    (any free one when that is 0); 0 picks a free one."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT (FN_REUSE_PORT=1), so that several gateway processes on this
    machine, each with its own state dir, pool and EMBER_GATEWAY_ID, share the port and the
    kernel spreads connections over them: replicas on one node (bench/throughput.py
    --processes measures it)."""
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
    env_zygotes: int = 4
    """Zygotes of trusted environments kept on this node at most (FN_ENV_ZYGOTES; `fn env
    trust`); the least recently used is retired for a new one. Each is charged its PSS (about
    50 MB with numpy) and counts as an instance in FN_MAX_INSTANCES_TOTAL."""
    zygote: bool = True
    """Fork instances from a pre-imported zygote (FN_ZYGOTE=0: start a fresh interpreter each)."""
    templates: bool = True
    """Fork a version's next instances from its template, imported already, once it earned
    one: it cold-started again on this node, or its import is slow (FN_TEMPLATE_SLOW_IMPORT)
    (FN_TEMPLATES=0 turns them off: every instance imports the function; docs/cold-starts.md)."""
    max_templates: int = 32
    """Templates kept on this node at most (FN_TEMPLATE_MAX); when full, the least recently
    used is retired. Each is charged its PSS (about 10 MB for a trivial function) and counts
    as an instance in FN_MAX_INSTANCES_TOTAL / FN_MAX_INSTANCES_MEMORY."""
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
    env_url: str | None = None
    """Where invoker pods fetch the environments of functions with requirements
    (EMBER_ENV_URL), with EMBER_BACKEND=kubernetes: the node's environment cache (deploy/ sets
    its Service), or a gateway's own URL. Pods GET `<url>/environments/<hash>`."""
    env_token_ttl_s: float = 600.0
    """How long the token a pod gets to fetch its environment is good for
    (EMBER_ENV_TOKEN_TTL): long enough for a pod start and the fetch."""
    gateway_id: str = field(default_factory=socket.gethostname)
    """This gateway's name towards the scheduler (EMBER_GATEWAY_ID); default: the host name,
    which on Kubernetes is the pod name."""
    http: HttpSettings = field(default_factory=HttpSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    events: EventSettings = field(default_factory=EventSettings)
    isolation: IsolationSettings = field(default_factory=IsolationSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)

    def dashboard_http(self) -> HttpSettings:
        """The dashboard port's HTTP limits: the gateway's, with at most 256 connections (its
        clients are people's browsers; the descriptors stay the gateway's)."""
        return replace(
            self.http, max_connections=min(self.http.max_connections, DASHBOARD_CONNECTIONS)
        )

    def dashboard_bind_port(self) -> int:
        """The dashboard's port to bind: `dashboard_port`, else the gateway's + 1 (0 if 0)."""
        if self.dashboard_port is not None:
            return self.dashboard_port
        return self.port + 1 if self.port else 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        read = Env(env)
        defaults, p, e, h = cls(), PoolSettings(), EventSettings(), HttpSettings()
        http = HttpSettings(
            header_timeout_s=read.duration_s("FN_HEADER_TIMEOUT", h.header_timeout_s),
            body_timeout_s=read.duration_s("FN_BODY_TIMEOUT", h.body_timeout_s),
            idle_timeout_s=read.duration_s("FN_IDLE_TIMEOUT", h.idle_timeout_s),
            write_timeout_s=read.duration_s("FN_WRITE_TIMEOUT", h.write_timeout_s),
            max_connections=read.whole("FN_MAX_CONNECTIONS", h.max_connections, 1, 10_000_000),
        )
        pool = PoolSettings(
            keep_alive_s=read.duration_s("FN_KEEP_ALIVE", p.keep_alive_s, maximum_s=7 * 86400),
            generic_pool_size=read.integer("FN_GENERIC_POOL", p.generic_pool_size),
            max_instances=read.integer("FN_MAX_INSTANCES", p.max_instances),
            max_total_instances=read.whole(
                "FN_MAX_INSTANCES_TOTAL", p.max_total_instances, 0, 1_000_000
            ),
            max_total_memory_bytes=_total_memory(read, p.max_total_memory_bytes),
            max_queue=read.integer("FN_MAX_QUEUE", p.max_queue),
            template_slow_import_s=read.duration_s(
                "FN_TEMPLATE_SLOW_IMPORT", p.template_slow_import_s
            ),
            max_response_bytes=read.size_bytes(
                "FN_MAX_RESPONSE", p.max_response_bytes, minimum=1024
            ),
        )
        events = EventSettings(
            workers=read.flag("FN_DELIVERIES", e.workers),
            concurrency=read.integer("FN_DELIVERY_CONCURRENCY", e.concurrency),
            lease_margin_s=read.duration_s("FN_DELIVERY_LEASE", e.lease_margin_s),
            retry_base_s=read.duration_s("FN_RETRY_BASE", e.retry_base_s),
            retry_max_s=read.duration_s("FN_RETRY_MAX", e.retry_max_s),
            poll_s=read.duration_s("FN_DELIVERY_POLL", e.poll_s),
            retention_s=read.duration_s(
                "FN_DELIVERY_RETENTION", e.retention_s, maximum_s=365 * 86400
            ),
            heartbeat_s=read.duration_s("FN_GATEWAY_HEARTBEAT", e.heartbeat_s),
            gateway_dead_after_s=read.duration_s("FN_GATEWAY_DEAD_AFTER", e.gateway_dead_after_s),
            source_batch=read.integer("FN_SOURCE_BATCH", e.source_batch),
            source_max_backlog=read.integer("FN_SOURCE_MAX_BACKLOG", e.source_max_backlog),
            source_lock_retry_s=read.duration_s("FN_SOURCE_LOCK_RETRY", e.source_lock_retry_s),
            source_reconnect_max_s=read.duration_s(
                "FN_SOURCE_RECONNECT_MAX", e.source_reconnect_max_s
            ),
        )
        backend = read.choice(
            "EMBER_BACKEND", defaults.backend, ("local", "kubernetes"), "local or kubernetes"
        )
        if backend == "kubernetes":
            for name in ("FN_SCHEDULER_TOKEN", "DATABASE_URL"):
                if name not in read:
                    raise ConfigError(
                        name, "", "set with EMBER_BACKEND=kubernetes (deploy/ sets it)"
                    )
            # The scheduler process keeps the generic pods; a gateway holds specialized ones.
            pool = replace(pool, generic_pool_size=0)
        isolation = isolation_from_env(env)
        time_scale = read.number("FN_TIME_SCALE", defaults.time_scale)
        if not 1 <= time_scale <= 10_000:
            raise ConfigError("FN_TIME_SCALE", time_scale, "a number from 1 to 10000")
        r = RoutingSettings()
        routing = RoutingSettings(
            enabled=read.flag("FN_ROUTE_CALLS", r.enabled),
            advertise_url=(read.optional("EMBER_GATEWAY_URL") or "").rstrip("/") or None,
            refresh_s=read.duration_s("FN_ROUTE_REFRESH", r.refresh_s),
            connect_timeout_s=read.duration_s("FN_ROUTE_CONNECT_TIMEOUT", r.connect_timeout_s),
        )
        return cls(
            http=http,
            routing=routing,
            time_scale=time_scale,
            events=events,
            isolation=isolation,
            retention=retention_from_env(env),
            host=read.text("FN_HOST", defaults.host),
            port=read.integer("FN_PORT", defaults.port),
            dashboard_port=(
                read.whole("FN_DASHBOARD_PORT", 0, 0, 65535)
                if "FN_DASHBOARD_PORT" in read
                else defaults.dashboard_port
            ),
            reuse_port=read.flag("FN_REUSE_PORT", defaults.reuse_port),
            state_dir=default_state_dir(env),
            database_url=read.secret("DATABASE_URL"),
            token=read.secret("FN_TOKEN"),
            max_body_bytes=read.size_bytes("FN_MAX_BODY", defaults.max_body_bytes, minimum=1024),
            env_zygotes=read.whole("FN_ENV_ZYGOTES", defaults.env_zygotes, 0, 1000),
            zygote=read.flag("FN_ZYGOTE", defaults.zygote),
            templates=read.flag("FN_TEMPLATES", defaults.templates),
            max_templates=read.whole("FN_TEMPLATE_MAX", defaults.max_templates, 0, 100_000),
            max_source_bytes=read.size_bytes(
                "FN_MAX_SOURCE", defaults.max_source_bytes, minimum=1024
            ),
            max_env_bytes=read.size_bytes("FN_MAX_ENV", defaults.max_env_bytes, minimum=1 << 20),
            build_timeout_s=read.duration_s("FN_BUILD_TIMEOUT", defaults.build_timeout_s),
            pool=pool,
            backend=backend,
            scheduler_url=read.optional("EMBER_SCHEDULER_URL"),
            scheduler_token=read.secret("FN_SCHEDULER_TOKEN"),
            env_url=(read.optional("EMBER_ENV_URL") or "").rstrip("/") or None,
            env_token_ttl_s=read.duration_s("EMBER_ENV_TOKEN_TTL", defaults.env_token_ttl_s),
            gateway_id=read.optional("EMBER_GATEWAY_ID") or socket.gethostname(),
        )


def isolation_from_env(env: Mapping[str, str]) -> IsolationSettings:
    """FN_ISOLATION, FN_UID_RANGE, FN_INSTANCE_TMP/PIDS/NOFILE and FN_HIDE (docs/security.md)."""
    read, d = Env(env), IsolationSettings()
    mode = read.text("FN_ISOLATION", d.mode).strip().lower()
    if mode not in ("auto", "strict", "off"):
        raise ConfigError("FN_ISOLATION", mode, "auto, strict or off")
    first, count = d.uid_first, d.uid_count
    if "FN_UID_RANGE" in read:
        raw = read.text("FN_UID_RANGE")
        low, sep, high = raw.partition("-")
        if not (
            sep
            and low.strip().isdigit()
            and high.strip().isdigit()
            and 1000 <= int(low) <= int(high) < 2**32 - 1
        ):
            raise ConfigError(
                "FN_UID_RANGE", raw, "FIRST-LAST uids, like 100000-165535 (not below 1000)"
            )
        first, count = int(low), int(high) - int(low) + 1
    paths: dict[str, tuple[str, ...]] = {}
    for name in ("FN_HIDE", "FN_EXPOSE"):
        paths[name] = tuple(p for p in read.text(name).split(":") if p)
        for path in paths[name]:
            if not path.startswith("/"):
                raise ConfigError(name, path, "absolute paths separated by colons")
    return IsolationSettings(
        mode=mode,
        uid_first=first,
        uid_count=count,
        tmp_bytes=read.size_bytes("FN_INSTANCE_TMP", d.tmp_bytes, minimum=1 << 20),
        pids_max=read.whole("FN_INSTANCE_PIDS", d.pids_max, 8, 1_000_000),
        nofile=read.whole("FN_INSTANCE_NOFILE", d.nofile, 64, 1_048_576),
        hide=paths["FN_HIDE"],
        expose=paths["FN_EXPOSE"],
    )


def _total_memory(read: Env, default: int) -> int:
    value = read.size_bytes("FN_MAX_INSTANCES_MEMORY", default, minimum=0, maximum=1 << 50)
    if 0 < value < 64 << 20:
        raise ConfigError("FN_MAX_INSTANCES_MEMORY", str(value), "0 (automatic) or at least 64Mi")
    return value
