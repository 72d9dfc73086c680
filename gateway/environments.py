"""`GET /environments/{hash}`: an environment's archive, for invoker pods (Kubernetes).

Not under `/v1`: the admin token is not what authorizes it, a token for that one environment
is (`gateway.env_tokens`), which the pod received in its specialize message. The archive is
streamed from this gateway's copy (`builds.archives`: the build's own, or written from the
database chunks the first time), with its sha256 in `X-Ember-Sha256`. A node's environment
cache (`gateway.envcache`) asks again with `If-None-Match: "<sha256>"` for each pod it serves
from its copy, and gets 304: the token is checked here every time, the bytes sent once.
"""

from __future__ import annotations

import re

from aiohttp import web

from builds.archives import EnvironmentMissing
from gateway.env_tokens import TokenRefused
from gateway.errors import error_response
from gateway.platform import PLATFORM

_HASH = re.compile(r"[0-9a-f]{64}")
SHA256_HEADER = "X-Ember-Sha256"


async def environment_archive(request: web.Request) -> web.StreamResponse:
    platform = request.app[PLATFORM]
    env_hash = request.match_info["hash"]
    if not _HASH.fullmatch(env_hash):
        return error_response(404, "not_found", "no environment has that name (a sha256)")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        platform.env_tokens.check(token.strip() if scheme.lower() == "bearer" else "", env_hash)
    except TokenRefused as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="ember-environments"'}
        return error_response(exc.status, exc.code, str(exc), headers=headers)
    try:
        archive = await platform.builder.archives.get(env_hash)
    except EnvironmentMissing as exc:
        return error_response(404, "not_found", str(exc))
    headers = {SHA256_HEADER: archive.sha256, "Cache-Control": "no-store"}
    if request.headers.get("If-None-Match") == f'"{archive.sha256}"':
        return web.Response(status=304, headers=headers)
    return web.FileResponse(archive.path, headers=headers)
