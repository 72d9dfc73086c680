"""How the admin API shows a function, a version and an activation (the JSON of
`gateway/schemas.py`), named as in their namespace (`function` and `namespace`): shared by the
admin routes, the read endpoints of `insights` and the dashboard."""

from __future__ import annotations

from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from events.sources import kinds as source_kinds
from events.sources.secrets import Cipher
from gateway import schemas as api
from gateway.namespaces import split_name, split_topic
from gateway.platform import Platform
from store import Activation, Function, Trigger, Version


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


def trigger_json(trigger: Trigger, cipher: Cipher) -> api.TriggerJSON:
    """What the API shows of a trigger (`cipher`: opens a broker URL to show it masked)."""
    out: api.TriggerJSON = {
        "id": trigger.id,
        "function": split_name(trigger.function)[1],
        "namespace": split_name(trigger.function)[0],
        "kind": trigger.kind,
        "created_at": trigger.created_at.isoformat() if trigger.created_at else None,
    }
    if trigger.kind == "topic" and trigger.topic is not None:
        out["topic"] = split_topic(trigger.topic)[1]
    elif trigger.kind in source_kinds.KINDS:
        out.update(cast(api.TriggerJSON, source_kinds.describe(trigger, cipher)))
    elif trigger.kind == "cron":
        out["cron"] = trigger.cron
        out["timezone"] = trigger.timezone
        out["next_fire_at"] = trigger.next_fire_at.isoformat() if trigger.next_fire_at else None
    else:
        out["table"] = trigger.table_name
        out["on"] = list(trigger.operations)
        out["database"] = _redact(trigger.database_url) if trigger.database_url else "ember"
    return out


def _redact(url: str) -> str:
    """A database URL without its password, in the user part or in the query (the URL is a
    secret; this is what is shown)."""
    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    if parts.query:
        query = [
            (k, "***" if "pass" in k.lower() else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="/*"))
    return parts.geturl()
