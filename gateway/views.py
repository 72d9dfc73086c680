"""How the admin API shows a function, a version and an activation (the JSON of
`gateway/schemas.py`), named as in their namespace (`function` and `namespace`): shared by the
admin routes, the read endpoints of `insights` and the dashboard."""

from __future__ import annotations

from gateway import schemas as api
from gateway.namespaces import split_name
from gateway.platform import Platform
from store import Activation, Function, Version


def version_json(version: Version, *, active: bool | None = None) -> api.VersionJSON:
    c, p = version.config, version.package
    namespace, short = split_name(version.function)
    out: api.VersionJSON = {
        "function": short,
        "namespace": namespace,
        "version": version.version,
        "sha256": version.sha256,
        "filename": version.filename,
        "handler": c.entry,
        "style": c.style,
        "style_options": dict(c.style_options),
        "env": dict(c.env),
        "timeout_s": c.timeout_s,
        "memory_bytes": c.memory_bytes,
        "concurrency": c.concurrency,
        "max_attempts": c.max_attempts,
        "max_event_age_s": c.max_event_age_s,
        "network": c.network,
        "cpus": c.cpus,
        "auth": c.auth,
        "secrets": list(c.secrets),  # names only: values are never returned
        "cors_origins": list(c.cors_origins),
        "created_at": version.created_at.isoformat(),
        "preimport": list(c.preimport),
        "requirements": p.requirements,
        "environment": p.env_hash,
        "lock": p.lock,
        "files": list(p.files) or [version.filename],
    }
    if active is not None:
        out["active"] = active
    return out


def function_json(function: Function, platform: Platform) -> api.FunctionJSON:
    instances = platform.scheduler.instances_of(function.name)
    namespace, short = split_name(function.name)
    return {
        "name": short,
        "namespace": namespace,
        "active_version": function.active_version,
        "latest_version": function.latest_version,
        "versions": function.version_count,
        "created_at": function.created_at.isoformat(),
        "updated_at": function.updated_at.isoformat(),
        "instances": {
            "total": len(instances),
            "busy": sum(1 for i in instances if i.busy),
            "pids": [pid for i in instances if (pid := platform.scheduler.pid_of(i)) is not None],
        },
    }


def activation_json(activation: Activation) -> api.ActivationJSON:
    namespace, short = split_name(activation.function)
    return {
        "id": str(activation.id),
        "function": short,
        "namespace": namespace,
        "version": activation.version,
        "started_at": activation.started_at.isoformat(),
        "duration_ms": round(activation.duration_ms, 3),
        "cold": activation.cold,
        "status": activation.status,
        "http_status": activation.http_status,
        "error": activation.error,
        "logs": activation.logs,
    }
