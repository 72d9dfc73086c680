"""The API's description: `GET /v1/openapi.json` (OpenAPI 3.1, built by `api_spec` from the
routes this gateway serves and the types their handlers use) and `GET /v1/docs` (a static page
shipped in the package that renders it: no CDN, no build step). Both are public: they describe
the API, they hold nothing of it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from importlib.resources import files
from typing import Any

from aiohttp import web

from gateway import environments, handoff, invoke
from gateway.api_spec import document, operation
from gateway.errors import json_response
from gateway.schemas import Queued

DOCUMENT = web.AppKey("openapi_document", dict[str, Any])
"""Filled on the first request (the routes are fixed once the application runs)."""

# The routes declared outside a RouteTableDef: the calls and the environments' archives.
operation(
    "calls",
    "Call a function (NAME, NAME:VERSION or NAME:ALIAS); the path after it, the query and the "
    "headers reach the handler. Prefer: respond-async queues the call (202).",
    headers={
        "Prefer": "respond-async: queue the call and answer 202 with its activation id",
        "Idempotency-Key": "with respond-async: a repeat returns the first call's activation",
    },
    responses={200: None, 202: Queued},
)(invoke.invoke)
operation(
    "internal",
    "Run a delivery a peer gateway claimed for a function homed here (peer gateways only, "
    "with the admin token: gateway/handoff.py)",
    responses={200: "application/octet-stream"},
)(handoff.serve)
operation(
    "internal",
    "An environment's archive, for invoker pods (a token for that environment, not the "
    "admin token)",
    responses={200: "application/octet-stream", 304: None},
)(environments.environment_archive)


def _version() -> str:
    try:
        return package_version("ember-faas")
    except PackageNotFoundError:
        return "0"


@operation("meta", "This document: OpenAPI 3.1", public=True, responses={200: None})
async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[DOCUMENT]
    if not cache:
        cache.update(document(request.app, version=_version()))
    return json_response(cache)


@operation("meta", "The API reference, rendered", public=True, responses={200: "text/html"})
async def docs_page(request: web.Request) -> web.Response:
    page = files("gateway").joinpath("static/docs.html").read_bytes()
    return web.Response(body=page, content_type="text/html", charset="utf-8")


def add_routes(app: web.Application) -> None:
    """Public routes of the root application (before the `/v1` sub-application, which would
    ask for the token)."""
    app[DOCUMENT] = {}
    app.router.add_get("/v1/openapi.json", openapi_json)
    app.router.add_get("/v1/docs", docs_page)
