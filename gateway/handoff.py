"""Deliveries run on their function's home gateway (docs/kubernetes.md, "Scaling gateways").

A delivery worker claims whatever is due, whatever the function, so that a gateway's queue
share does not depend on which functions it is home to. What it claimed for a function homed
on another gateway it hands to that home over the one-hop channel the calls use
(`POST /peer/deliveries`, the admin token), and the home runs it with its own warm instances
and policy: a function's async calls and events warm instances in one place, as its direct
calls do. The worker keeps the claim: it records the outcome the home answered, so the
delivery is at-least-once as before. A home that does not take the connection is left out and
the next one tried (this gateway included: nothing reached it); a home lost during the run
makes the attempt a failure, retried with the usual backoff (it may or may not have run).

The message, both ways: a JSON line, then the raw bytes (the payload; the handler's body).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from calls.execute import CallPath, CallResult, execute
from gateway.errors import error_response
from gateway.peers import NotReached, PeerError
from gateway.routing import HOP_HEADER, Router
from invoker.protocol import RequestMeta
from store import ActivationId, FunctionNotFound, Version, VersionNotFound

log = logging.getLogger("ember.gateway.handoff")

PATH = "/peer/deliveries"


class Handoff:
    """Runs a claimed delivery at its function's home: `run` is the delivery worker's call."""

    def __init__(
        self,
        router: Router,
        calls: CallPath,
        *,
        token: str,
        lease_margin_s: float,
        registry: CollectorRegistry,
    ) -> None:
        self.router = router
        self.calls = calls
        self._token = token
        self.lease_margin_s = lease_margin_s
        """The claim's lease is the function's timeout plus this: past it the home's answer
        would not be recorded anyway (another claim has it)."""
        sent = Counter(
            "ember_gateway_sent_deliveries",
            "Deliveries run on their function's home gateway, by outcome: served there, run "
            "here (no home took the connection), lost (the home went away during the run: "
            "retried)",
            ["outcome"],
            registry=registry,
        )
        self._served, self._fallback, self._lost = (
            sent.labels(o) for o in ("served", "fallback", "lost")
        )

    async def run(
        self, version: Version, activation: ActivationId, meta: RequestMeta, payload: bytes
    ) -> CallResult:
        """Run one attempt of a delivery: at the function's home, or here."""
        function = version.function
        home = self.router.home_for(function)
        if home is None:
            return await execute(self.calls, version, activation, meta, payload)
        head = json.dumps(
            {
                "function": function,
                "version": version.version,
                "activation": str(activation),
                "meta": meta,
            },
            separators=(",", ":"),
        ).encode()
        body = head + b"\n" + payload
        while home is not None:
            message = (
                f"POST {PATH} HTTP/1.1\r\n"
                f"Host: {home.peer[0]}:{home.peer[1]}\r\n"
                f"Authorization: Bearer {self._token}\r\n"
                f"{HOP_HEADER}: {self.router.name}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            try:
                async with asyncio.timeout(version.config.timeout_s + self.lease_margin_s):
                    response = await self.router.request(home, message)
            except (PeerError, TimeoutError) as exc:
                if isinstance(exc, NotReached):
                    home = self.router.next_home(home, function, exc)
                    continue
                self._lost.inc()
                log.warning(
                    "home gateway lost during a delivery; it is retried",
                    extra={"function": function, "home": home.name, "error": repr(exc)},
                )
                return CallResult(
                    "crashed",
                    502,
                    error={
                        "type": "HomeGatewayLost",
                        "message": f"the gateway {home.name!r} that runs function "
                        f'"{function}" went away during the delivery ({exc}); it may or may '
                        "not have run",
                    },
                    code="home_gateway_lost",
                )
            self._served.inc()
            return _result(response.status, response.body, home.name)
        self._fallback.inc()
        return await execute(self.calls, version, activation, meta, payload)

    async def answer(self, request: web.Request) -> web.Response:
        """`POST /peer/deliveries`: run a delivery a peer claimed for a function homed here
        (run here whatever this gateway's view of the homes: one hop at most)."""
        # (surrogateescape: header bytes that are not UTF-8 are a wrong token, not a crash)
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {self._token}".encode()):
            return error_response(
                401, "unauthorized", "peer gateways share the admin token (FN_TOKEN)"
            )
        data = await request.read()
        head, sep, payload = data.partition(b"\n")
        try:
            sent = json.loads(head)
            function, number = str(sent["function"]), int(sent["version"])
            activation = ActivationId(uuid.UUID(sent["activation"]))
            meta = cast(RequestMeta, dict(sent["meta"]))
        except (ValueError, KeyError, TypeError) as exc:
            return error_response(400, "bad_request", f"not a handed-off delivery: {exc!r}")
        if not sep:
            return error_response(400, "bad_request", "not a handed-off delivery: no payload")
        try:
            version = await self.calls.functions.resolve(function, number)
        except (FunctionNotFound, VersionNotFound) as exc:
            return error_response(404, "function_not_found", str(exc))
        result = await execute(self.calls, version, activation, meta, payload)
        return web.Response(body=_encode(result), content_type="application/octet-stream")


HANDOFF = web.AppKey("handoff", Handoff)


async def serve(request: web.Request) -> web.Response:
    """The route's handler (`Handoff.answer`)."""
    return await request.app[HANDOFF].answer(request)


_GONE = frozenset({"function_not_found", "version_not_found"})
"""The codes of the home's 404s that mean the delivery's function or version is gone."""

_FIELDS = ("status", "http_status", "headers", "error", "code", "message", "logs", "cold")


def _encode(result: CallResult) -> bytes:
    head: dict[str, Any] = {f: getattr(result, f) for f in _FIELDS}
    head["retry_after_s"] = result.retry_after_s
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + result.body


def _result(status: int, body: bytes, home: str) -> CallResult:
    """The home's answer as the worker's CallResult; its refusals as attempts that failed."""
    if status == 200:
        head, _, out = body.partition(b"\n")
        try:
            fields = json.loads(head)
            return CallResult(body=out, **{k: fields[k] for k in (*_FIELDS, "retry_after_s")})
        except (ValueError, KeyError, TypeError) as exc:
            status, body = 502, f"unreadable answer: {exc!r}".encode()
    text = body[:1000].decode("utf-8", "replace")
    if status == 404 and _error_code(body) in _GONE:  # deleted meanwhile: as the worker's own
        # resolve would find. Any other 404 (a home without this route: a gateway of an older
        # release during a rollout) ran nothing and says nothing of the function: retried.
        error = {"type": "FunctionNotFound", "message": text, "retry": False}
        return CallResult("error", 404, error=error, code="function_not_found", message=text)
    if status in (429, 503):  # stopping, or its database away: nothing ran, try again soon
        return CallResult("throttled", 503, code="home_busy", message=text, retry_after_s=1.0)
    log.warning("home gateway refused a delivery", extra={"home": home, "status": status})
    error = {"type": "HomeGatewayError", "message": f"{home}: {status} {text}"}
    return CallResult("error", 502, error=error, code="home_gateway_error", message=text)


def _error_code(body: bytes) -> str | None:
    """The `error.code` of a JSON error answer, None when it is not one."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None
