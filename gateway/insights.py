"""What people look at, over the admin API: a function's logs since a time or followed live
(Server-Sent Events), its calls over time (counts, errors, cold starts, p50/p99), the pool now,
and the policy simulator run on the function's own recorded arrivals.

GET /v1/functions/{name}/logs[?since=10m&limit=100&follow=1]   (follow: text/event-stream)
GET /v1/functions/{name}/stats[?since=1h]
GET /v1/functions/{name}/simulate[?since=1d&policy=fixed:10m&policy=histogram]
GET /v1/pool                                                    (the admin token only)

Function names in the path are in the request's namespace (the admin middleware qualifies
them), so a key sees its own namespace's functions only; the pool is the platform's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import statistics
import time

import orjson
from aiohttp import web

from config.units import ConfigError, parse_duration_s
from gateway import schemas as api
from gateway.api_spec import operation
from gateway.errors import bad_request, json_response
from gateway.namespaces import split_name
from gateway.platform import Platform
from gateway.requests import not_found, platform_of
from gateway.views import activation_json
from scheduler.pool import State
from store import Activation, CallStats, FunctionNotFound

routes = web.RouteTableDef()
FOLLOW_POLL_S = 0.25
"""How often a followed log looks for new activations (a call's record is flushed first)."""
KEEPALIVE_S = 15.0
"""An SSE comment this often while nothing happens: proxies keep the stream open."""
BUCKETS = 60
"""Points of a stats series, whatever the window."""
DEFAULT_POLICIES = ("fixed:10m", "histogram", "histogram-cost", "adaptive")


def _since(request: web.Request, default: str) -> dt.datetime:
    raw = request.query.get("since", default)
    try:
        seconds = parse_duration_s(raw, "since", maximum_s=90 * 86400.0)
    except ConfigError as exc:
        raise bad_request("bad_since", str(exc), setting="since") from None
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= maximum):
        raise bad_request("bad_limit", f"limit must be 1-{maximum}, got {raw!r}")
    return int(raw)


async def _exists(platform: Platform, name: str) -> bool:
    try:
        await platform.store.get_function(name)
    except FunctionNotFound:
        return False
    return True


@routes.get("/v1/functions/{name}/logs")
@operation(
    "activations",
    "Activations since a time, oldest first; follow=1 streams new ones (Server-Sent Events)",
    query=api.LogsQuery,
    responses={200: [api.ActivationList, "text/event-stream"]},
)
async def logs(request: web.Request) -> web.StreamResponse:
    platform = platform_of(request)
    name = request.match_info["name"]
    since = _since(request, "1h")
    limit = _limit(request, 100, 1000)
    follow = request.query.get("follow", "0")
    if follow not in ("0", "1", "true", "false"):
        raise bad_request("bad_follow", "follow is 1 (stream new activations) or 0")
    if not await _exists(platform, name):
        return not_found(name)
    await platform.activations.flush()
    activations = await platform.store.list_activations_since(name, since, limit=limit)
    if follow in ("0", "false"):
        return json_response({"activations": [activation_json(a) for a in activations]})
    return await stream_activations(request, platform, name, activations, since)


async def stream_activations(
    request: web.Request,
    platform: Platform,
    name: str,
    first: list[Activation],
    since: dt.datetime,
) -> web.StreamResponse:
    """Send `first`, then each new activation of NAME as it is recorded, as Server-Sent Events
    (`event: activation`, JSON data, the activation id as the event id), until the client
    goes. The dashboard's live list reads the same stream."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    seen: dict[str, None] = {}
    last = since
    pending = first
    quiet_since = time.monotonic()
    try:
        while True:
            for activation in pending:
                key = str(activation.id)
                if key in seen:
                    continue
                seen[key] = None
                last = max(last, activation.started_at)
                data = orjson.dumps(activation_json(activation), default=str)
                await response.write(b"event: activation\nid: " + key.encode() + b"\ndata: ")
                await response.write(data + b"\n\n")
                quiet_since = time.monotonic()
            while len(seen) > 2000:  # remember the recent ids only
                seen.pop(next(iter(seen)))
            if time.monotonic() - quiet_since > KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            # Until the next poll; ended when the gateway stops, or when the client has gone
            # (noticed here, not only at the next write: a quiet function writes once in 15 s).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(platform.stopping.wait(), FOLLOW_POLL_S)
            if platform.stopping.is_set() or request.transport is None:
                break
            if request.transport.is_closing():
                break
            await platform.activations.flush()
            # (from a little before the newest seen: records of one batch share no order)
            pending = await platform.store.list_activations_since(
                name, last - dt.timedelta(seconds=5), limit=500
            )
    except ConnectionError:
        pass  # the client went away
    return response


@routes.get("/v1/functions/{name}/stats")
@operation(
    "activations",
    "Calls, errors, cold starts and latency over time; warm instances and the policy in force",
    query=api.StatsQuery,
    responses={200: api.FunctionStats},
)
async def stats(request: web.Request) -> web.Response:
    platform = platform_of(request)
    name = request.match_info["name"]
    since = _since(request, "1h")
    if not await _exists(platform, name):
        return not_found(name)
    await platform.activations.flush()
    window_s = (dt.datetime.now(dt.UTC) - since).total_seconds()
    bucket_s = max(1, round(window_s / BUCKETS))
    series = await platform.store.activation_series(name, since, bucket_s=bucket_s)
    summary = await platform.store.function_activation_summary(name, since)
    return json_response(function_stats(platform, name, series, summary, bucket_s))


def function_stats(
    platform: Platform,
    name: str,
    series: list[CallStats],
    summary: CallStats | None,
    bucket_s: int,
) -> api.FunctionStats:
    instances = platform.scheduler.instances_of(name)
    policy = platform.scheduler.policies.overrides.get(name, platform.scheduler.policies.default)
    namespace, short = split_name(name)
    return {
        "function": short,
        "namespace": namespace,
        "bucket_s": bucket_s,
        "calls": summary.calls if summary else 0,
        "errors": summary.errors if summary else 0,
        "cold": summary.cold if summary else 0,
        "warm": summary.calls - summary.cold if summary else 0,
        "p50_ms": round(summary.p50_ms, 3) if summary else None,
        "p99_ms": round(summary.p99_ms, 3) if summary else None,
        "series": [
            {
                "at": s.at.isoformat() if s.at else "",
                "calls": s.calls,
                "errors": s.errors,
                "cold": s.cold,
                "warm": s.calls - s.cold,
                "p50_ms": round(s.p50_ms, 3),
                "p99_ms": round(s.p99_ms, 3),
            }
            for s in series
        ],
        "warm_instances": len(instances),
        "busy_instances": sum(1 for i in instances if i.busy),
        "policy": {
            "prewarm": policy.prewarm,
            "keep_alive_s": policy.keep_alive_s,
            "min_warm": policy.min_warm,
            "max_instances": policy.max_instances,
        },
    }


@routes.get("/v1/pool")
@operation(
    "pool",
    "The warm pool now: generic and specialized instances, idle memory",
    responses={200: api.PoolJSON},
)
async def pool(request: web.Request) -> web.Response:
    return json_response(pool_json(platform_of(request)))


def pool_json(platform: Platform) -> api.PoolJSON:
    import psutil

    scheduler = platform.scheduler
    now = time.monotonic()
    instances: list[api.InstanceJSON] = []
    idle_bytes = 0
    for instance in list(scheduler.pool.instances.values()):
        pid = scheduler.pid_of(instance)
        rss: int | None = None
        if pid is not None:
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                rss = None
        idle = instance.state is State.READY and instance.busy == 0
        if idle and rss:
            idle_bytes += rss
        where = split_name(instance.key[0]) if instance.key else None
        instances.append(
            {
                "id": instance.id,
                "state": instance.state.value,
                "function": where[1] if where else None,
                "namespace": where[0] if where else None,
                "version": instance.key[1] if instance.key else None,
                "busy": instance.busy,
                "calls": instance.calls,
                "idle_s": round(now - instance.idle_since, 3) if idle else None,
                "pid": pid,
                "rss_bytes": rss,
            }
        )
    states = [i["state"] for i in instances]
    return {
        "generic": states.count(State.GENERIC.value),
        "specialized": states.count(State.READY.value),
        "starting": states.count(State.STARTING.value),
        "idle_memory_bytes": idle_bytes,
        "reserved_memory_bytes": scheduler.room.usage()[1],
        "instances": instances,
    }


@routes.get("/v1/functions/{name}/simulate")
@operation(
    "policies",
    "What each policy would have done with the function's own recorded calls",
    query=api.SimulateQuery,
    responses={200: api.Simulation},
)
async def simulate(request: web.Request) -> web.Response:
    from scheduler.policy import parse_policy

    platform = platform_of(request)
    name = request.match_info["name"]
    since = _since(request, "1d")
    specs = request.query.getall("policy", []) or list(DEFAULT_POLICIES)
    if len(specs) > 8:
        raise bad_request("bad_policy", "simulate at most 8 policies at once")
    for spec in specs:
        try:
            parse_policy(spec)
        except ValueError as exc:
            raise bad_request("bad_policy", str(exc), setting="policy") from None
    try:
        version = await platform.store.get_version(name)
    except FunctionNotFound:
        return not_found(name)
    arrivals = await platform.store.list_arrivals(name, since)
    memory_mb = version.config.memory_bytes / (1 << 20)
    results = await asyncio.to_thread(_simulate, name, arrivals, specs, memory_mb)
    namespace, short = split_name(name)
    return json_response(
        {
            "function": short,
            "namespace": namespace,
            "since": since.isoformat(),
            "calls": len(arrivals),
            "results": results,
        }
    )


def _simulate(
    name: str, arrivals: list[tuple[dt.datetime, float]], specs: list[str], memory_mb: float
) -> list[api.SimulatedPolicy]:
    from scheduler.policy import parse_policy
    from scheduler.simulator import FunctionTrace, compare

    if not arrivals:
        return []
    start = arrivals[0][0]
    trace = FunctionTrace(
        name=name,
        arrivals=[(at - start).total_seconds() for at, _ in arrivals],
        duration_s=statistics.median(ms for _, ms in arrivals) / 1000,
        memory_mb=memory_mb,
    )
    results = compare([trace], [functools.partial(parse_policy, s) for s in specs])
    return [
        {
            "policy": r.policy,
            "calls": r.calls,
            "cold": r.cold,
            "starts": r.starts,
            "cold_rate": round(r.cold_rate, 6),
            "idle_gb_s": round(r.idle_gb_s, 6),
        }
        for r in results
    ]
