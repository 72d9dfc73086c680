"""The admin API of trusted environments (`fn env trust|untrust|trusted`, the admin token only):
an environment the operator trusts gets a zygote that imported its packages, and the first
instance of any function using it is a fork of that zygote (`scheduler.backends.env_zygotes`;
docs/cold-starts.md says why only the operator may say so: docs/security.md).

A key, whatever its role, is refused (403): its holder chose the requirements, so trusting
them would let it run its packages' code in the process that builds other functions' walls.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway import schemas as api
from gateway.api_spec import operation
from gateway.errors import bad_request, error_response, json_response
from gateway.requests import json_body, platform_of
from scheduler.backends.env_zygotes import EnvZygotes
from scheduler.backends.local import LocalBackend
from store.errors import NotFound

routes = web.RouteTableDef()

_HASH = re.compile(r"[0-9a-f]{64}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_MODULES = 64


def _zygotes(request: web.Request) -> EnvZygotes | None:
    backend = platform_of(request).scheduler.backend
    return backend.env_zygotes if isinstance(backend, LocalBackend) else None


def _hash_of(request: web.Request) -> str:
    env_hash = request.match_info["hash"]
    if not _HASH.fullmatch(env_hash):
        raise bad_request("bad_environment", f"{env_hash[:80]!r} is not an environment (a sha256)")
    return env_hash


def _state(zygotes: EnvZygotes | None, env_hash: str) -> dict[str, Any]:
    known = zygotes.trusted.get(env_hash) if zygotes is not None else None
    if known is None:
        return {"state": "no zygotes on this backend" if zygotes is None else "not made"}
    return known.as_json()


@routes.put("/v1/environments/{hash}/trust")
@operation(
    "environments",
    "Trust an environment: its packages are imported once in a zygote its functions fork from",
    body=api.TrustRequest,
    responses={200: api.TrustedEnvironmentJSON},
)
async def trust_environment(request: web.Request) -> web.Response:
    env_hash = _hash_of(request)
    modules = (await json_body(request)).get("modules") or []
    if (
        not isinstance(modules, list)
        or len(modules) > MAX_MODULES
        or not all(isinstance(m, str) and _MODULE.fullmatch(m) for m in modules)
    ):
        raise bad_request(
            "bad_modules", f"modules: a list of up to {MAX_MODULES} module names (a.b.c)"
        )
    platform = platform_of(request)
    try:
        trusted = await platform.store.trust_environment(env_hash, modules)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    zygotes = _zygotes(request)
    if zygotes is not None:
        zygotes.trust(env_hash, trusted.modules)
    return json_response(
        {
            "hash": env_hash,
            "modules": trusted.modules,
            "requirements": trusted.requirements,
            "lock": trusted.lock,
            **_state(zygotes, env_hash),
        }
    )


@routes.delete("/v1/environments/{hash}/trust")
@operation(
    "environments",
    "Untrust an environment: its zygote forks no more, and exits once its instances have",
    responses={200: api.UntrustedEnvironment},
)
async def untrust_environment(request: web.Request) -> web.Response:
    env_hash = _hash_of(request)
    removed = await platform_of(request).store.untrust_environment(env_hash)
    zygotes = _zygotes(request)
    if zygotes is not None:
        removed = zygotes.untrust(env_hash) or removed
    if not removed:
        return error_response(
            404, "not_found", f"environment {env_hash} is not trusted (fn env trusted lists them)"
        )
    return json_response({"hash": env_hash, "trusted": False})


@routes.get("/v1/environments/trusted")
@operation(
    "environments",
    "The trusted environments and their zygotes on this node",
    responses={200: api.TrustedEnvironmentList},
)
async def list_trusted(request: web.Request) -> web.Response:
    zygotes = _zygotes(request)
    rows = await platform_of(request).store.list_trusted_environments()
    return json_response(
        {
            "environments": [
                {
                    "hash": t.hash,
                    "modules": t.modules,
                    "requirements": t.requirements,
                    "lock": t.lock,
                    "trusted_at": t.trusted_at.isoformat(),
                    **_state(zygotes, t.hash),
                }
                for t in rows
            ]
        }
    )
