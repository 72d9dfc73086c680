"""The dashboard at `/ui`: server-rendered pages over the same data as the admin API (functions
and their versions, settings, calls over time, warm instances and the policy in force; the pool;
triggers; dead letters with redrive; a function's activations live; the policy simulator on its
own recorded calls). No build step: HTML from `dashboard_html`, a stylesheet and a small script
shipped in the package (`static/`).

Who may look is decided in one place, `dashboard_auth.viewer_for`; the simulator's parts are in
`dashboard_sim`. Namespaces: a key's viewer sees its namespace only (functions, their calls and
activations, triggers, dead letters; not the pool, which is the platform's); the admin sees
every one. A function's pages name it `/ui/functions/NAME?namespace=NS` (no `namespace`:
`default`, or the key's own)."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from aiohttp import web

from gateway import dashboard_html as h
from gateway import dashboard_invoke, dashboard_sim, insights
from gateway.dashboard_auth import (
    Viewer,
    checked_post,
    csrf_token,
    html,
    login,
    login_page,
    logout,
    namespace_of,
    not_from_the_dashboard,
    to_login,
    viewer_of,
)
from gateway.errors import error_response, json_response
from gateway.events import delivery_json
from gateway.namespaces import DEFAULT_NAMESPACE, qualify, shown_name, split_name
from gateway.platform import PLATFORM, Platform
from gateway.requests import not_found
from gateway.units import NAME
from gateway.views import trigger_json
from store import ActivationId, FunctionNotFound

# -- pages ------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    if viewer is None:
        return to_login(request)
    platform = request.app[PLATFORM]
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    functions = [
        f for f in await platform.store.list_functions() if viewer.sees(split_name(f.name)[0])
    ]
    await platform.activations.flush()
    summary = await platform.store.activation_summary(hour_ago)
    policies = platform.scheduler.policies
    warm: dict[str, int] = {}
    for instance in platform.scheduler.pool.instances.values():
        if instance.key is not None:
            warm[instance.key[0]] = warm.get(instance.key[0], 0) + 1
    rows = []
    for f in functions:
        s = summary.get(f.name)
        link = f'<a href="{h.esc(function_url(f.name))}">{h.esc(shown_name(f.name))}</a>'
        policy = policies.overrides.get(f.name, policies.default)
        cells = [
            link,
            f.active_version,
            f.version_count,
            s.calls if s else 0,
            s.errors if s else 0,
            h.ms(s.p50_ms) if s else "-",
            h.ms(s.p99_ms) if s else "-",
            s.cold if s else 0,
            warm.get(f.name, 0),
            policy.prewarm,
        ]
        rows.append([str(c) if i == 0 else h.esc(c) for i, c in enumerate(cells)])
    headers = ["function", "active", "versions", "calls (1h)", "errors", "p50", "p99", "cold"]
    body = (
        f'<h1>Functions <span class="muted">({len(functions)})</span></h1>'
        '<input type="search" id="filter" placeholder="filter by name" data-filter="functions">'
        + h.table(
            [*headers, "warm", "policy"],
            rows,
            id="functions",
            raw=True,
            empty="No functions yet: fn deploy handler.py",
        )
        + (_pool_section(platform) if viewer.namespace is None else "")
        + await _triggers_section(platform, None, viewer)
        + await _dead_section(platform, None, viewer)
        + dashboard_sim.trace_picker()
    )
    return html(h.page("Functions", body, csrf=csrf_token(request)))


def function_url(stored: str) -> str:
    """The page of function `stored` (a stored name: `team-a.resize`)."""
    namespace, name = split_name(stored)
    where = "" if namespace == DEFAULT_NAMESPACE else f"?namespace={namespace}"
    return f"/ui/functions/{name}{where}"


def _pool_section(platform: Platform) -> str:
    pool = insights.pool_json(platform)
    rows = [
        [
            i["state"],
            (
                i["function"]
                if i["namespace"] in (None, DEFAULT_NAMESPACE)
                else f"{i['namespace']}/{i['function']}"
            )
            or "(generic)",
            i["version"] or "",
            i["busy"],
            i["calls"],
            "" if i["idle_s"] is None else f"{i['idle_s']:.0f} s",
            i["pid"] or "",
            h.size(i["rss_bytes"]),
        ]
        for i in pool["instances"]
    ]
    facts = h.definition(
        [
            ("generic", pool["generic"]),
            ("specialized", pool["specialized"]),
            ("starting", pool["starting"]),
            ("idle memory", h.size(pool["idle_memory_bytes"])),
            ("reserved memory", h.size(pool["reserved_memory_bytes"])),
        ]
    )
    headers = ["state", "function", "version", "busy", "calls", "idle", "pid", "memory"]
    instances = h.table(headers, [[str(c) for c in r] for r in rows], empty="no instances")
    return (
        f'<h2 id="pool">Pool</h2>{facts}<details><summary>instances</summary>{instances}</details>'
    )


async def _triggers_section(platform: Platform, name: str | None, viewer: Viewer) -> str:
    triggers = [
        trigger_json(t, platform.vault)
        for t in await platform.store.list_triggers(name)
        if viewer.sees(split_name(t.function)[0])
    ]
    rows = []
    for t in triggers:
        what = t.get("topic") or (
            f"{t.get('cron')} ({t.get('timezone')})" if t["kind"] == "cron" else t.get("table")
        )
        rows.append([str(t["id"]), _shown(t), t["kind"], str(what)])
    return '<h2 id="triggers">Triggers</h2>' + h.table(
        ["id", "function", "kind", "what"], rows, empty="no triggers"
    )


def _shown(item: Any) -> str:
    """A trigger's or delivery's function as it is called: NAME or NAMESPACE/NAME."""
    namespace, name = item["namespace"], item["function"]
    return str(name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}")


async def _dead_section(platform: Platform, name: str | None, viewer: Viewer) -> str:
    # (another namespace's letters are skipped: read more than are shown)
    limit = 50 if viewer.namespace is None or name is not None else 500
    found = await platform.store.list_dead(name, limit=limit)
    dead = [delivery_json(d) for d in found if viewer.sees(split_name(d.function)[0])][:50]
    rows = []
    for d in dead:
        error = d.get("error") or {}
        button = (
            f'<button class="redrive" data-id="{h.esc(d["id"])}">Redrive</button>'
            if viewer.can_act
            else ""
        )
        rows.append(
            [
                f"<code>{h.esc(d['id'])}</code>",
                h.esc(_shown(d)),
                h.esc(d["source"]),
                h.esc(d["attempts"]),
                h.esc(f"{error.get('type', '')}: {error.get('message', '')}"),
                h.esc((d["finished_at"] or "")[:19]),
                button,
            ]
        )
    headers = ["id", "function", "source", "attempts", "error", "dead since", ""]
    return '<h2 id="dead">Dead letters</h2>' + h.table(
        headers, rows, id="dead-letters", raw=True, empty="no dead letters"
    )


async def function_page(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    if viewer is None:
        return to_login(request)
    platform = request.app[PLATFORM]
    namespace = namespace_of(request, viewer)
    if isinstance(namespace, web.Response):
        return namespace
    short = request.match_info["name"]
    name = qualify(namespace, short)
    window = request.query.get("since", "1h")
    if window not in ("15m", "1h", "6h", "1d", "7d"):
        window = "1h"
    try:
        function = await platform.store.get_function(name) if NAME.fullmatch(short) else None
        active = await platform.store.get_version(name)
    except FunctionNotFound:
        function = None
    if function is None:
        return not_found(name)
    versions = await platform.store.list_versions(name)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(
        seconds={"15m": 900, "1h": 3600, "6h": 21600, "1d": 86400, "7d": 604800}[window]
    )
    await platform.activations.flush()
    bucket_s = max(1, round((dt.datetime.now(dt.UTC) - since).total_seconds() / insights.BUCKETS))
    series = await platform.store.activation_series(name, since, bucket_s=bucket_s)
    summary = await platform.store.function_activation_summary(name, since)
    stats = insights.function_stats(platform, name, series, summary, bucket_s)
    c = active.config
    settings = h.definition(
        [
            ("active version", f"{function.active_version} of {function.version_count}"),
            ("handler", f"{active.filename}:{c.entry} ({c.style} style)"),
            ("timeout", f"{c.timeout_s:g} s"),
            ("memory", h.size(c.memory_bytes)),
            ("concurrency", c.concurrency),
            ("cpus", f"{c.cpus:g}"),
            ("network", c.network),
            ("access", "private (an invoker key)" if c.auth == "key" else "public"),
            ("secrets", ", ".join(c.secrets) or "-"),
            ("CORS origins", ", ".join(c.cors_origins) or "-"),
            ("env", ", ".join(sorted(c.env)) or "-"),
            ("requirements", " ".join(active.package.requirements.split()) or "-"),
            ("sha256", active.sha256),
        ]
    )
    p = stats["policy"]
    policy = h.definition(
        [
            ("prewarm", p["prewarm"]),
            ("keep-alive", f"{p['keep_alive_s']:g} s"),
            ("min warm", p["min_warm"]),
            ("max instances", p["max_instances"]),
            ("warm instances now", f"{stats['warm_instances']} ({stats['busy_instances']} busy)"),
        ]
    )
    xs, points = _buckets(since, bucket_s, stats["series"])
    counts = h.line_chart(
        f"calls per {bucket_s:g} s",
        xs,
        {
            "calls": [p["calls"] for p in points],
            "errors": [p["errors"] for p in points],
            "cold starts": [p["cold"] for p in points],
            "warm hits": [p["warm"] for p in points],
        },
    )
    latency = h.line_chart(
        "latency",
        xs,
        {"p50": [p["p50_ms"] for p in points], "p99": [p["p99_ms"] for p in points]},
        unit=" ms",
    )
    also = "" if namespace == DEFAULT_NAMESPACE else f"&amp;namespace={h.esc(namespace)}"
    windows = " ".join(
        f'<a href="?since={w}{also}"{" class=current" if w == window else ""}>{w}</a>'
        for w in ("15m", "1h", "6h", "1d", "7d")
    )
    totals = (
        f"{stats['calls']} calls, {stats['errors']} errors, {stats['cold']} cold starts, "
        f"{stats['warm']} warm hits, p50 {h.ms(stats['p50_ms'])}, p99 {h.ms(stats['p99_ms'])}"
    )
    version_rows = [
        [str(v.version), v.sha256[:12], v.created_at.isoformat()[:19], "*" if is_active else ""]
        for v, is_active in versions
    ]
    # (the page's call sends no key: a private function answers it 401, naming the key it needs)
    private = (
        '<p class="muted">A private function: this box sends no key, so the call is refused; '
        f"call it with: fn --namespace {h.esc(namespace)} invoke {h.esc(short)}</p>"
        if c.auth == "key"
        else ""
    )
    invoke_box = (
        f'<h2>Invoke</h2>{private}<div class="invoke">'
        '<select id="invoke-method"><option>POST</option><option>GET</option>'
        "<option>PUT</option><option>DELETE</option></select>"
        '<input id="invoke-path" placeholder="/path (optional)">'
        '<textarea id="invoke-body" rows="3">{}</textarea>'
        '<button id="invoke">Invoke</button><pre id="invoke-result" class="muted">'
        "the answer shows here</pre></div>"
        if viewer.can_act
        else ""
    )
    body = (
        f'<h1 id="function-name" data-name="{h.esc(short)}" data-namespace="{h.esc(namespace)}">'
        f"{h.esc(shown_name(name))}</h1>"
        f'<div class="columns"><section><h2>Settings</h2>{settings}</section>'
        f"<section><h2>Policy in force</h2>{policy}</section></div>"
        f'<h2>Calls <span class="windows">{windows}</span></h2><p>{h.esc(totals)}</p>'
        f'<div class="columns">{counts}{latency}</div>'
        + invoke_box
        + '<h2>Recent activations <span class="muted live">live</span></h2>'
        + h.table(
            ["started", "id", "version", "status", "HTTP", "duration", "cold", "logs"],
            [],
            id="activations",
            empty="waiting for activations...",
        )
        + "<h2>Versions</h2>"
        + h.table(["version", "sha256", "created", "active"], version_rows)
        + await _triggers_section(platform, name, viewer)
        + await _dead_section(platform, name, viewer)
        + "<h2>Policy simulator</h2><p>What each policy would have done with this function's "
        'recorded calls: <select id="simulate-since"><option>1h</option>'
        "<option selected>1d</option><option>7d</option></select> "
        '<button id="simulate">Simulate</button></p><div id="simulation"></div>'
    )
    return html(h.page(shown_name(name), body, csrf=csrf_token(request)))


def _buckets(
    since: dt.datetime, bucket_s: int, series: list[Any]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Every bucket of the window, those without calls as zeros (the chart spans the window)."""
    empty = {"calls": 0, "errors": 0, "cold": 0, "warm": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    by_start = {int(dt.datetime.fromisoformat(p["at"]).timestamp()): p for p in series if p["at"]}
    first = int(since.timestamp()) // bucket_s * bucket_s
    last = int(dt.datetime.now(dt.UTC).timestamp()) // bucket_s * bucket_s
    starts = range(first, last + 1, bucket_s)
    labels = [dt.datetime.fromtimestamp(s, dt.UTC).isoformat() for s in starts]
    return labels, [by_start.get(s, empty) for s in starts]


STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}


# -- data for the page's script ---------------------------------------------------------------


async def activation_stream(request: web.Request) -> web.StreamResponse:
    viewer = viewer_of(request)
    if viewer is None:
        return error_response(401, "unauthorized", "sign in at /ui/login")
    namespace = namespace_of(request, viewer)
    if isinstance(namespace, web.Response):
        return namespace
    platform = request.app[PLATFORM]
    if not NAME.fullmatch(request.match_info["name"]):
        return not_found(request.match_info["name"])
    name = qualify(namespace, request.match_info["name"])
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    await platform.activations.flush()
    first = await platform.store.list_activations_since(name, since, limit=50)
    return await insights.stream_activations(request, platform, name, first, since)


async def redrive(request: web.Request) -> web.Response:
    checked = await checked_post(request)
    if isinstance(checked, web.Response):
        return checked
    raw = request.match_info["id"]
    try:
        delivery = ActivationId(uuid.UUID(raw))
    except ValueError:
        return error_response(400, "bad_activation_id", f'"{raw}" is not an activation id')
    store = request.app[PLATFORM].store
    found = await store.get_delivery(delivery)
    if found is None or not checked.sees(split_name(found.function)[0]):
        return error_response(404, "activation_not_found", f"no dead letter {raw!r} here")
    redriven = await store.redrive([delivery], None)
    return json_response({"redriven": [str(i) for i in redriven]})


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:
        return error_response(404, "not_found", f"no file {name!r} here")
    data = files("gateway").joinpath(f"static/{name}").read_bytes()
    return web.Response(body=data, content_type=STATIC[name], headers={"Cache-Control": "no-cache"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application) -> None:
    """The dashboard's routes, on its own application and port (`gateway.dashboard_invoke`
    says why)."""
    app.router.add_get("/", _to_ui)
    for method, path, handler in [
        ("GET", "/ui", overview),
        ("GET", "/ui/", overview),
        ("GET", "/ui/login", login_page),
        ("POST", "/ui/login", login),
        ("POST", "/ui/logout", logout),
        ("GET", "/ui/functions/{name}", function_page),
        ("GET", "/ui/functions/{name}/stream", activation_stream),
        ("GET", "/ui/functions/{name}/simulation", dashboard_sim.simulation),
        ("GET", "/ui/simulate", dashboard_sim.trace_simulation),
        ("POST", "/ui/dlq/{id}/redrive", redrive),
        ("POST", "/ui/functions/{name}/invoke", dashboard_invoke.invoke),
    ]:
        app.router.add_route(method, path, _from_the_dashboard(handler))
    app.router.add_get("/ui/static/{file}", static)  # (public files)


async def _to_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui")


def _from_the_dashboard(handler: Handler) -> Handler:
    """`handler`, for the requests `not_from_the_dashboard` lets through."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = not_from_the_dashboard(request)
        return refused if refused is not None else await handler(request)

    return guarded
