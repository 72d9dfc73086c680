"""The admin API of tenancy: namespaces, API keys, secrets, the audit trail (`/v1/...`, each
route classified in `auth.ROUTES`), and `audit`, which the admin middleware calls for every
action (a request that is not a GET): who, what, when, and how it ended."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from aiohttp import web

from config.units import ConfigError, parse_duration_s
from gateway.auth import Principal, principal_of
from gateway.errors import bad_request, error_response, json_response
from gateway.keyring import ROLES, new_key_secret
from gateway.namespaces import DEFAULT_NAMESPACE, NAMESPACE, shown_name
from gateway.platform import Platform
from gateway.requests import json_body, limit_of, platform_of
from gateway.units import ENV_KEY, NAME
from gateway.vault import SecretError
from store import ApiKey, FunctionNotFound

log = logging.getLogger("ember.gateway.audit")
routes = web.RouteTableDef()

MAX_KEY_LIFETIME_S = 10 * 365 * 86400.0
MAX_SECRET_BYTES = 64 * 1024


async def audit(
    request: web.Request, principal: Principal | None, route: str | None, status: int
) -> None:
    """Record an admin action (reads are not actions). A failure to record is logged loudly;
    the action itself already happened."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    platform = platform_of(request)
    actor = principal.actor if principal is not None else "anonymous"
    namespace = principal.namespace if principal is not None else DEFAULT_NAMESPACE
    try:
        await platform.store.record_audit(
            actor=actor,
            namespace=namespace,
            method=request.method,
            path=request.path[:500],
            action=f"{request.method} {route or request.path[:200]}",
            status=status,
        )
    except Exception:
        log.exception(
            "could not record an admin action",
            extra={"actor": actor, "method": request.method, "path": request.path[:200]},
        )


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "namespace": key.namespace,
        "role": key.role,
        "description": key.description,
        "created_by": key.created_by,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@routes.get("/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    p = principal_of(request)
    return json_response({"actor": p.actor, "role": p.role, "namespace": p.namespace})


@routes.get("/v1/namespaces")
async def list_namespaces(request: web.Request) -> web.Response:
    platform, principal = platform_of(request), principal_of(request)
    names = [
        {"name": n.name, "auth": n.auth, "created_at": n.created_at.isoformat()}
        for n in platform.keys.namespaces()
        if principal.is_admin or n.name == principal.namespace
    ]
    return json_response({"namespaces": names})


@routes.put("/v1/namespaces/{namespace}")
async def set_namespace(request: web.Request) -> web.Response:
    platform = platform_of(request)
    name = request.match_info["namespace"]
    if not NAMESPACE.fullmatch(name):
        raise bad_request(
            "bad_namespace", f"{name[:50]!r} is not a namespace: 1-40 lowercase letters, digits, -"
        )
    auth = (await json_body(request)).get("auth")
    if auth not in (None, "public", "key"):
        raise bad_request("bad_auth", f"auth must be public or key, not {auth!r}")
    row = await platform.store.set_namespace(name, auth)
    platform.keys.put_namespace(row)
    return json_response({"name": row.name, "auth": row.auth})


@routes.post("/v1/keys")
async def create_key(request: web.Request) -> web.Response:
    platform, principal = platform_of(request), principal_of(request)
    body = await json_body(request)
    namespace = body.get("namespace", principal.namespace)
    role = body.get("role")
    if not isinstance(namespace, str) or not NAMESPACE.fullmatch(namespace):
        raise bad_request("bad_namespace", f"{namespace!r} is not a namespace name")
    if role not in ROLES:
        raise bad_request("bad_role", f"role must be one of {', '.join(ROLES)}, not {role!r}")
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > 200:
        raise bad_request("bad_description", "description: a text of up to 200 characters")
    expires_at = None
    if body.get("expires_in") is not None:
        try:
            seconds = parse_duration_s(
                body["expires_in"], "--expires-in", maximum_s=MAX_KEY_LIFETIME_S
            )
        except ConfigError as exc:
            raise bad_request("bad_expiry", str(exc)) from None
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    key_id, token, secret_hash = new_key_secret()
    key = await platform.store.create_api_key(
        id=key_id,
        namespace=namespace,
        role=role,
        secret_hash=secret_hash,
        description=description,
        created_by=principal.actor,
        expires_at=expires_at,
    )
    platform.keys.put(key)
    await ensure_namespace(platform, namespace)
    # The only time the key is shown: only its hash is kept.
    return json_response({**key_json(key), "key": token}, status=201)


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    platform = platform_of(request)
    keys = await platform.store.list_api_keys()
    namespace = request.query.get("namespace")
    return json_response(
        {"keys": [key_json(k) for k in keys if namespace is None or k.namespace == namespace]}
    )


@routes.delete("/v1/keys/{id}")
async def revoke_key(request: web.Request) -> web.Response:
    platform = platform_of(request)
    key_id = request.match_info["id"]
    key = await platform.store.revoke_api_key(key_id, None)
    if key is None:
        return error_response(
            404, "key_not_found", f"no API key {key_id[:50]!r}; list them with: fn key list"
        )
    platform.keys.put(key)  # refused here before this answers; elsewhere on NOTIFY
    return json_response(key_json(key))


# -- secrets ----------------------------------------------------------------------------------


def _secret_name(request: web.Request) -> str:
    name = request.match_info["secret"]
    if not NAME.fullmatch(name):
        raise bad_request(
            "bad_secret_name",
            f"{name[:50]!r} is not a secret name: 1-63 lowercase letters, digits, - and _",
        )
    return name


@routes.put("/v1/secrets/{secret}")
async def set_secret(request: web.Request) -> web.Response:
    """Set (or rotate) a secret's values. They are encrypted here and never shown again; the
    warm instances of functions that read it are replaced, here and on every gateway."""
    platform, principal = platform_of(request), principal_of(request)
    name = _secret_name(request)
    values = (await json_body(request)).get("values")
    if not isinstance(values, dict) or not values:
        raise bad_request("bad_secret", 'send {"values": {"KEY": "value", ...}}')
    size = 0
    for key, value in values.items():
        if not ENV_KEY.fullmatch(key) or not isinstance(value, str) or "\0" in value:
            # (the value is not quoted: it may be the secret)
            raise bad_request(
                "bad_secret",
                f"secret {name}: {key[:50]!r} must be a NAME (letters, digits, _) with a "
                "string value without NUL",
            )
        size += len(key) + len(value.encode())
    if size > MAX_SECRET_BYTES:
        raise bad_request("secret_too_large", f"a secret holds up to {MAX_SECRET_BYTES} bytes")
    try:
        sealed = platform.vault.seal(values)
    except SecretError as exc:
        return error_response(503, "secrets_unavailable", str(exc))
    info, users = await platform.store.set_secret(principal.namespace, name, sealed, sorted(values))
    rolled = [u for u in users if platform.scheduler.knows(u)]
    platform.rolling.update(rolled)
    try:
        for function in rolled:
            await platform.roll(function)
    finally:
        platform.rolling.difference_update(rolled)
    return json_response(
        {
            "secret": info.name,
            "namespace": info.namespace,
            "keys": list(info.keys),
            "updated_at": info.updated_at.isoformat(),
            "functions": [shown_name(u) for u in users],
        }
    )


@routes.get("/v1/secrets")
async def list_secrets(request: web.Request) -> web.Response:
    platform, principal = platform_of(request), principal_of(request)
    secrets = await platform.store.list_secrets(principal.namespace)
    return json_response(
        {
            "secrets": [
                {
                    "secret": s.name,
                    "namespace": s.namespace,
                    "keys": list(s.keys),
                    "updated_at": s.updated_at.isoformat(),
                }
                for s in secrets
            ]
        }
    )


@routes.delete("/v1/secrets/{secret}")
async def delete_secret(request: web.Request) -> web.Response:
    platform, principal = platform_of(request), principal_of(request)
    name = _secret_name(request)
    if not await platform.store.delete_secret(principal.namespace, name):
        return error_response(
            404, "secret_not_found", f"no secret {name!r} in namespace {principal.namespace!r}"
        )
    return json_response({"deleted": name, "namespace": principal.namespace})


async def missing_secrets(
    platform: Platform, namespace: str, names: tuple[str, ...]
) -> web.Response | None:
    """A 400 naming the first secret a deploy reads that its namespace does not have."""
    if not names:
        return None
    have = {s.name for s in await platform.store.list_secrets(namespace)}
    for name in names:
        if name not in have:
            return error_response(
                400,
                "secret_not_found",
                f"secret {name!r} does not exist in namespace {namespace!r}; set it first "
                f"with: fn secret set {name} KEY=VALUE",
                setting="--secret",
            )
    return None


async def default_auth(platform: Platform, name: str, namespace: str) -> str:
    """What a deploy without --auth gets: its function's current access (a private function
    does not turn public by a redeploy that forgot the flag), else its namespace's default."""
    try:
        return (await platform.functions.resolve(name)).config.auth
    except FunctionNotFound:
        return platform.keys.namespace_auth(namespace)


async def ensure_namespace(platform: Platform, namespace: str) -> None:
    """Record a namespace on first use, so that `/fn/NAMESPACE/NAME` finds it."""
    if namespace != DEFAULT_NAMESPACE and not platform.keys.namespace_exists(namespace):
        platform.keys.put_namespace(await platform.store.set_namespace(namespace))


# -- audit ------------------------------------------------------------------------------------


@routes.get("/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    """Admin actions, newest first: the admin sees every namespace (or `?namespace=`), a key
    its own namespace's."""
    platform, principal = platform_of(request), principal_of(request)
    asked = request.headers.get("X-Ember-Namespace") or request.query.get("namespace")
    namespace = principal.namespace if not principal.is_admin or asked else None
    entries = await platform.store.list_audit(namespace, limit_of(request))
    return json_response(
        {
            "audit": [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "namespace": e.namespace,
                    "action": e.action,
                    "path": e.path,
                    "status": e.status,
                }
                for e in entries
            ]
        }
    )
