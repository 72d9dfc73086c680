"""What the Kubernetes API means, apart from serving it: label selectors, JSON merge patches,
Status bodies, and the RBAC rules the fake enforces (the scheduler's Role in deploy/)."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

Obj = dict[str, Any]
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


_TERM = re.compile(
    r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)"
    r"|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics: =, ==, !=, in, notin, exists, !exists."""
    for term in re.split(r",(?![^(]*\))", selector):
        if not term.strip():
            continue
        m = _TERM.match(term)
        if m is None:
            raise ValueError(f"bad selector term {term!r}")
        neg, key, op, value, set_op, values = m.groups()
        if set_op:
            options = {v.strip() for v in values.split(",")}
            if (labels.get(key) in options) != (set_op == "in"):
                return False
        elif op in ("=", "=="):
            if labels.get(key) != value:
                return False
        elif op == "!=":
            if labels.get(key) == value:
                return False
        elif (key in labels) == bool(neg):
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386; for the maps the backend patches, strategic merge does the same."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def role_rules(path: Path, name: str = "ember-scheduler") -> list[Obj]:
    """The rules of the Role `name` in a manifest file."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] == "Role" and doc["metadata"]["name"] == name:
            rules: list[Obj] = doc["rules"]
            return rules
    raise LookupError(f"no Role {name} in {path}")


SCHEDULER_RULES = role_rules(
    Path(__file__).resolve().parents[2] / "deploy" / "base" / "scheduler-rbac.yaml"
)
"""What deploy/ grants the scheduler: the fake enforces exactly this."""


def without(rules: list[Obj], resource: str, verb: str) -> list[Obj]:
    return [
        {**r, "verbs": [v for v in r["verbs"] if not (v == verb and resource in r["resources"])]}
        for r in rules
    ]
