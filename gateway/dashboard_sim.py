"""The policy simulator in the dashboard: its trade-off plot (cold-start rate against idle
memory, one point per policy) for a function's own recorded calls, or for a trace the operator
chose from the folder `FN_TRACES` names (a folder per trace in the Azure Functions 2019 format,
or a CSV of `function,timestamp_s` rows): the same simulator `fn policy simulate` runs."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway import dashboard_html as h
from gateway import insights
from gateway.dashboard_auth import html, namespace_of, viewer_of
from gateway.errors import error_response
from gateway.namespaces import qualify
from gateway.requests import not_found
from gateway.units import NAME


async def simulation(request: web.Request) -> web.StreamResponse:
    viewer = viewer_of(request)
    if viewer is None:
        return error_response(401, "unauthorized", "sign in at /ui/login")
    namespace = namespace_of(request, viewer)
    if isinstance(namespace, web.Response):
        return namespace
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        return not_found(name)
    request.match_info["name"] = qualify(namespace, name)  # (as the admin API's middleware)
    response = await insights.simulate(request)
    if not isinstance(response, web.Response) or response.status != 200:
        return response
    assert isinstance(response.body, bytes)
    data: dict[str, Any] = orjson.loads(response.body)
    plot = h.tradeoff_plot(data["results"])
    note = f'<p class="muted">{data["calls"]} calls since {h.esc(data["since"][:19])}</p>'
    return html(note + plot)


TRACES_ENV = "FN_TRACES"
"""A folder of traces the dashboard offers to simulate (unset: none)."""


def traces() -> dict[str, Path]:
    """The traces of FN_TRACES by name: its folders (Azure format) and .csv files."""
    root = os.environ.get(TRACES_ENV)
    if not root or not Path(root).is_dir():
        return {}
    found = {}
    for path in sorted(Path(root).iterdir()):
        if (path.is_dir() and any(path.glob("*_inv.csv"))) or (
            path.suffix == ".csv" and path.is_file()
        ):
            found[path.name] = path
    return found


def trace_picker() -> str:
    """The overview's section: pick a trace and policies, see the plot."""
    names = traces()
    if not names:
        return (
            '<h2 id="simulator">Policy simulator</h2><p class="muted">Set FN_TRACES to a folder '
            "of traces (Azure Functions 2019 folders, or CSVs of function,timestamp_s) to try "
            "policies on them here; each function's page simulates its own calls.</p>"
        )
    options = "".join(f"<option>{h.esc(n)}</option>" for n in names)
    return (
        '<h2 id="simulator">Policy simulator</h2><p>Trace <select id="trace">'
        f"{options}</select> policies "
        f'<input id="trace-policies" value="{h.esc(" ".join(insights.DEFAULT_POLICIES))}" '
        'size="40"> <button id="simulate-trace">Simulate</button></p>'
        '<div id="trace-simulation"></div>'
    )


async def trace_simulation(request: web.Request) -> web.StreamResponse:
    """`GET /ui/simulate?trace=NAME&policy=SPEC...`: the plot for a trace of FN_TRACES."""
    from scheduler.policy import parse_policy
    from scheduler.simulator import compare, load_azure_trace, load_timestamps_csv

    if viewer_of(request) is None:
        return error_response(401, "unauthorized", "sign in at /ui/login")
    path = traces().get(request.query.get("trace", ""))
    if path is None:
        return error_response(404, "trace_not_found", f"no such trace in {TRACES_ENV}")
    specs = request.query.getall("policy", []) or list(insights.DEFAULT_POLICIES)
    try:
        makers: list[Callable[[], Any]] = [functools.partial(parse_policy, s) for s in specs[:8]]
        for make in makers:
            make()
    except ValueError as exc:
        return error_response(400, "bad_policy", str(exc))

    def run() -> list[Any]:
        loaded = load_azure_trace(path) if path.is_dir() else load_timestamps_csv(path)
        return compare(loaded, makers)

    try:
        results = await asyncio.to_thread(run)
    except (OSError, ValueError, KeyError) as exc:
        return error_response(400, "bad_trace", f"cannot read trace {path.name}: {exc}")
    rows = [
        {
            "policy": r.policy,
            "calls": r.calls,
            "cold": r.cold,
            "cold_rate": r.cold_rate,
            "idle_gb_s": r.idle_gb_s,
        }
        for r in results
    ]
    return html(f'<p class="muted">{h.esc(path.name)}</p>' + h.tradeoff_plot(rows))
