"""Warm-pool policies over the API: stored overrides in, effective settings out.

A function's effective policy is the platform's settings (`fn up --keep-alive`...), overridden
by the stored default ('*'), overridden by the function's own row. Every gateway reloads them
when Postgres notifies a change, so `fn policy set` applies without a restart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from config.units import ConfigError, parse_duration_s
from gateway.auth import may_see
from gateway.errors import error_response, json_response
from gateway.platform import PLATFORM, Platform
from gateway.policy_settings import DEFAULT, FIELDS, effective
from scheduler.policy import FunctionPolicy
from store import FunctionNotFound, PolicyRow

routes = web.RouteTableDef()


def policy_row_from_body(body: dict[str, Any], function: str) -> PolicyRow:
    prewarm = body.get("prewarm")
    if prewarm == "off":
        prewarm = "fixed"
    if prewarm is not None and prewarm not in ("fixed", "histogram", "histogram-cost", "adaptive"):
        raise ConfigError(
            "--prewarm", prewarm, "adaptive, fixed (or off), histogram or histogram-cost"
        )
    keep_alive_s = None
    if body.get("keep_alive") is not None:
        raw = body["keep_alive"]
        keep_alive_s = (
            0.0
            if raw in (0, "0", "0s")
            else parse_duration_s(raw, "--keep-alive", maximum_s=7 * 86400)
        )
    counts: dict[str, int | None] = {}
    for key, flag, low in (("min_warm", "--min-warm", 0), ("max_instances", "--max-instances", 1)):
        value = body.get(key)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
            value = int(value)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10_000
        ):
            raise ConfigError(flag, value, f"a whole number from {low} to 10000")
        counts[key] = value
    return PolicyRow(
        function=function,
        prewarm=prewarm,
        keep_alive_s=keep_alive_s,
        min_warm=counts["min_warm"],
        max_instances=counts["max_instances"],
    )


_UNSETTABLE = {
    "prewarm": "prewarm",
    "keep_alive": "keep_alive_s",
    "min_warm": "min_warm",
    "max_instances": "max_instances",
}


def _parse_unset(value: Any) -> list[str]:
    """`["keep_alive", ...]` (API names) -> the policy fields to unset."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or any(n not in _UNSETTABLE for n in names):
        raise ConfigError("--unset", value, "some of " + ", ".join(_UNSETTABLE))
    return [_UNSETTABLE[n] for n in names]


def _policy_json(name: str, policy: FunctionPolicy, row: PolicyRow | None) -> dict[str, Any]:
    return {
        "function": name,
        **dataclasses.asdict(policy),
        "set": {f: getattr(row, f) for f in FIELDS if getattr(row, f) is not None} if row else {},
    }


async def _read(platform: Platform, name: str) -> dict[str, Any]:
    rows = await platform.store.list_policies()
    default, overrides = effective(platform.settings.pool, rows)
    row = next((r for r in rows if r.function == name), None)
    policy = default if name == DEFAULT else overrides.get(name, default)
    out = _policy_json("default" if name == DEFAULT else name, policy, row)
    if name != DEFAULT:
        out["instances"] = len(platform.scheduler.instances_of(name))
    return out


async def _write(request: web.Request, name: str) -> web.Response:
    platform = request.app[PLATFORM]
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "bad_json", "request body is not JSON")
    if not isinstance(body, dict):
        return error_response(400, "bad_json", "request body must be a JSON object")
    try:
        row = policy_row_from_body(body, name)
        unset = _parse_unset(body.get("unset", []))
    except ConfigError as exc:
        return error_response(400, "bad_policy", str(exc), setting=exc.setting)
    both = [f for f in unset if getattr(row, f) is not None]
    if both:
        return error_response(
            400, "bad_policy", f"{both[0].removesuffix('_s')} is both set and unset"
        )
    if all(getattr(row, f) is None for f in FIELDS) and not unset:
        return error_response(
            400,
            "bad_policy",
            "nothing to set: give --prewarm, --keep-alive, --min-warm, --max-instances or --unset",
        )
    policies = await platform.store.list_policies()
    rows = [r for r in policies if r.function != name]
    old = next((r for r in policies if r.function == name), None)
    merged = PolicyRow(
        function=name,
        **{
            f: None
            if f in unset
            else getattr(row, f)
            if getattr(row, f) is not None
            else getattr(old, f, None)
            for f in FIELDS
        },
    )
    default, overrides = effective(platform.settings.pool, [*rows, merged])
    for policy_name, policy in [("default", default), *overrides.items()]:
        if policy.min_warm > policy.max_instances:
            return error_response(
                400,
                "bad_policy",
                f"min-warm ({policy.min_warm}) cannot exceed max-instances "
                f"({policy.max_instances}) for {policy_name}",
                setting="--min-warm",
            )
    await platform.store.set_policy(row, unset)
    await platform.reload_policies()  # this gateway at once; the others on NOTIFY
    return json_response(await _read(platform, name))


@routes.get("/v1/policy")
async def show_default(request: web.Request) -> web.Response:
    return json_response(await _read(request.app[PLATFORM], DEFAULT))


@routes.put("/v1/policy")
async def set_default(request: web.Request) -> web.Response:
    return await _write(request, DEFAULT)


async def _exists(platform: Platform, name: str) -> web.Response | None:
    try:
        await platform.store.get_function(name)
    except FunctionNotFound:
        return error_response(
            404,
            "function_not_found",
            f'function "{name}" not found; deploy it first with: fn deploy {name}.py',
        )
    return None


@routes.get("/v1/functions/{name}/policy")
async def show_policy(request: web.Request) -> web.Response:
    platform, name = request.app[PLATFORM], request.match_info["name"]
    return await _exists(platform, name) or json_response(await _read(platform, name))


@routes.put("/v1/functions/{name}/policy")
async def set_policy(request: web.Request) -> web.Response:
    platform, name = request.app[PLATFORM], request.match_info["name"]
    return await _exists(platform, name) or await _write(request, name)


@routes.delete("/v1/functions/{name}/policy")
async def reset_policy(request: web.Request) -> web.Response:
    platform, name = request.app[PLATFORM], request.match_info["name"]
    missing = await _exists(platform, name)
    if missing is not None:
        return missing
    await platform.store.delete_policy(name)
    await platform.reload_policies()
    return json_response(await _read(platform, name))


@routes.get("/v1/policies")
async def list_policies(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    rows = await platform.store.list_policies()
    default, overrides = effective(platform.settings.pool, rows)
    by_name = {r.function: r for r in rows}
    return json_response(
        {
            "default": _policy_json("default", default, by_name.get(DEFAULT)),
            "functions": [
                _policy_json(n, p, by_name.get(n))
                for n, p in sorted(overrides.items())
                if may_see(request, n)  # the request's namespace's
            ],
        }
    )
