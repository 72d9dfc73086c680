"""The events the Lambda style hands a handler, built from an Ember call (invoker/styles).

An HTTP call (source "http", or "async": an HTTP request queued) becomes the event of the
service that would have fronted the function on AWS, chosen at deploy (`--lambda-event`; when
not given, the one whose fields the handler's module reads, `infer_event_kind`):

    v2   API Gateway HTTP API, payload format 2.0 (the default)
    v1   API Gateway REST API proxy integration, payload format 1.0
    alb  Application Load Balancer target group (single-value headers, its default)
    url  Lambda function URL (format 2.0 with the function URL's requestContext)

The function is mounted like an API with a greedy `/{proxy+}` route: the path is the sub-path
after /fn/NAME, `pathParameters` is {"proxy": "a/b"} for /fn/NAME/a/b (v1 and v2). Ember knows no
API id, stage, account or caller identity: those fields hold fixed placeholders (`Site`).

Other sources are events, not HTTP requests: a schedule's tick becomes an EventBridge
"Scheduled Event"; a topic's or table's payload is handed over decoded from JSON, as
`aws lambda invoke` hands a payload.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from invoker.styles import Incoming
from invoker.styles.aws_routes import Matched, Route, match_route

ACCOUNT_ID = "000000000000"
"""The AWS account id in ARNs and events: Ember has none (a valid 12-digit form)."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Site:
    """What the events say of where the function runs, fixed at bind."""

    function: str
    region: str
    api_id: str = "ember"
    routes: tuple[Route, ...] = ()
    """A SAM template's routes (aws_routes); none: every path is /{proxy+}."""


class NotRouted(LookupError):
    """The function has routes and none takes the call's method and path (API Gateway: 404)."""


def _routed(call: Incoming, site: Site, path: str) -> Matched | None:
    if not site.routes:
        return None
    matched = match_route(site.routes, call.method, path)
    if matched is None:
        raise NotRouted(f"no route for {call.method} {path}")
    return matched


Builder = Callable[[Incoming, Site], dict[str, Any]]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_KNOWN = frozenset({"host", "user-agent", "x-forwarded-for"})
_FORM_OR_NONE = frozenset({"", "application/x-www-form-urlencoded"})
_TEXT_TYPES = frozenset({"application/json", "application/javascript", "application/xml"})


def _request_time(call: Incoming) -> float:
    """When the request arrived (an async call: when it was submitted), in epoch seconds."""
    if call.event_time:
        try:
            return dt.datetime.fromisoformat(call.event_time).timestamp()
        except ValueError:
            pass
    return time.time()


def _clf_time(epoch_s: float) -> str:
    """API Gateway's request time: 12/Mar/2020:19:03:58 +0000 (no locale involved)."""
    t = time.gmtime(epoch_s)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def is_text_type(content_type: str) -> bool:
    """What API Gateway HTTP APIs, function URLs and load balancers pass as text rather than
    base64: text/*, JSON, JavaScript and XML (`+json`/`+xml` types too)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))


def _body(call: Incoming, *, any_text: bool) -> tuple[str | None, bool]:
    """(body, isBase64Encoded): UTF-8 text for textual content types (`any_text`: for any
    type, as a REST API without binary media types passes it), else base64. A form or a
    body without Content-Type (what `curl -d` sends) is text too when it decodes: HTTP APIs
    base64-encode those, which a handler that checks isBase64Encoded does not notice and one
    that does not check cannot take."""
    body = call.body
    if not body:
        return None, False
    if (
        any_text
        or is_text_type(call.content_type)
        or call.content_type.split(";", 1)[0].strip().lower() in _FORM_OR_NONE
    ):
        try:
            return body.decode(), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode(), True


def _source_ip(call: Incoming) -> str:
    """The client's address as the gateway saw it (its TCP peer, as API Gateway's sourceIp
    is), not X-Forwarded-For, which any caller can write."""
    return call.client or "unknown"


def _proxy(path: str) -> dict[str, str] | None:
    sub = path.lstrip("/")
    return {"proxy": sub} if sub else None


def _host(host: str | None) -> tuple[str, str]:
    """(domainName, domainPrefix) from the Host header."""
    host = host or "localhost"
    return host, host.split(":", 1)[0].split(".", 1)[0]


def _v2_parts(call: Incoming) -> tuple[dict[str, str], list[str]]:
    """Headers of format 2.0: names lowercased, repeated ones comma-joined; the cookies
    taken out of them into a list of their own."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for key, value in call.headers:
        name = key.lower()
        if name == "cookie":
            cookies.extend(c for c in (part.strip() for part in value.split(";")) if c)
            continue
        seen = headers.get(name)
        headers[name] = value if seen is None else f"{seen},{value}"
    return headers, cookies


def http_api_event(call: Incoming, site: Site, *, function_url: bool = False) -> dict[str, Any]:
    """API Gateway HTTP API payload 2.0 (and, `function_url`, a function URL's)."""
    headers, cookies = _v2_parts(call)
    domain, prefix = _host(headers.get("host"))
    arrived = _request_time(call)
    path = call.path or "/"
    matched = None if function_url else _routed(call, site, path)
    route_key = matched.route.key if matched else "$default"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": call.query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if call.query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(call.query, keep_blank_values=True):
            seen = params.get(key)
            params[key] = value if seen is None else f"{seen},{value}"
        event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": site.api_id,
        "domainName": domain,
        "domainPrefix": prefix,
        "http": {
            "method": call.method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": _source_ip(call),
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": call.context.activation_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": _clf_time(arrived),
        "timeEpoch": int(arrived * 1000),
    }
    body, encoded = _body(call, any_text=False)
    if body is not None:
        event["body"] = body
    if not function_url:
        parameters = matched.parameters if matched else _proxy(path)
        if parameters:
            event["pathParameters"] = parameters
    event["isBase64Encoded"] = encoded
    return event


def function_url_event(call: Incoming, site: Site) -> dict[str, Any]:
    return http_api_event(call, site, function_url=True)


def rest_api_event(call: Incoming, site: Site) -> dict[str, Any]:
    """API Gateway REST API proxy payload 1.0: header names as sent, the last value of a
    repeated header or parameter in the single-value maps, every value in the multi-value
    ones; null where there is nothing."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    known: dict[str, str] = {}
    for key, value in call.headers:
        headers[key] = value
        multi_headers.setdefault(key, []).append(value)
        name = key.lower()
        if name in _KNOWN and name not in known:
            known[name] = value
    params: dict[str, str] | None = None
    multi_params: dict[str, list[str]] | None = None
    if call.query:
        params, multi_params = {}, {}
        for key, value in parse_qsl(call.query, keep_blank_values=True):
            params[key] = value
            multi_params.setdefault(key, []).append(value)
    domain, prefix = _host(known.get("host"))
    arrived = _request_time(call)
    path = call.path or "/"
    matched = _routed(call, site, path)
    if matched is not None:
        proxy = matched.parameters or None
        resource = matched.route.path
    else:
        proxy = _proxy(path)
        resource = "/{proxy+}" if proxy else "/"
    source_ip = _source_ip(call)
    user_agent = known.get("user-agent", "")
    request_id = call.context.activation_id
    body, encoded = _body(call, any_text=True)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": call.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": params,
        "multiValueQueryStringParameters": multi_params,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": site.api_id,
            "domainName": domain,
            "domainPrefix": prefix,
            "extendedRequestId": request_id,
            "httpMethod": call.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": source_ip,
                "user": None,
                "userAgent": user_agent,
                "userArn": None,
            },
            "path": path,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": _clf_time(arrived),
            "requestTimeEpoch": int(arrived * 1000),
            "resourceId": None,
            "resourcePath": resource,
            "stage": "$default",
        },
        "pathParameters": proxy,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": encoded,
    }


def alb_event(call: Incoming, site: Site) -> dict[str, Any]:
    """A load balancer's event (multi-value headers off, its default): header names
    lowercased, the last value of a repeated header or parameter, query parameters as sent
    (not URL-decoded), an empty body as ""."""
    headers: dict[str, str] = {}
    for key, value in call.headers:
        headers[key.lower()] = value
    params: dict[str, str] = {}
    for pair in call.query.split("&") if call.query else ():
        key, _, value = pair.partition("=")
        params[key] = value
    body, encoded = _body(call, any_text=False)
    return {
        "requestContext": {
            "elb": {
                "targetGroupArn": f"arn:aws:elasticloadbalancing:{site.region}:{ACCOUNT_ID}:"
                f"targetgroup/{site.function[:32]}/0000000000000000"
            }
        },
        "httpMethod": call.method,
        "path": call.path or "/",
        "queryStringParameters": params,
        "headers": headers,
        "body": body or "",
        "isBase64Encoded": encoded,
    }


# What a handler's source reads of its event, by the service whose event has it.
_WSGI_ADAPTERS = r"\b(awsgi|serverless_wsgi|apig_wsgi|aws_lambda_wsgi|flask_lambda|zappa)\b"
"""Libraries that hand a Lambda event to a WSGI app (aws-wsgi, serverless-wsgi, apig-wsgi,
flask-lambda, Zappa's handler): the module that calls them reads nothing of the event itself,
but they read an API Gateway event, of which v1 is the one they all take."""
_READS = {
    "alb": re.compile(r"\bALB(Resolver|Event)\b|targetGroupArn|statusDescription|[\"']elb[\"']"),
    "url": re.compile(r"\bLambdaFunctionUrl(Resolver|Event)\b"),
    "v1": re.compile(
        r"\bAPIGatewayRestResolver\b|\bAPIGatewayProxyEvent\b|[\"']httpMethod[\"']"
        r"|multiValue(Headers|QueryStringParameters)|\[[\"'](path|resource)[\"']\]"
        r"|\.get\([\"'](path|resource)[\"']|resourcePath|" + _WSGI_ADAPTERS
    ),
    "v2": re.compile(
        r"\bAPIGatewayHttpResolver\b|\bAPIGatewayProxyEventV2\b|rawPath|rawQueryString"
        r"|routeKey|\[[\"']http[\"']\]"
    ),
}


# Anything of an HTTP event or response: a module with none of it is not an HTTP handler.
_HTTP = re.compile(
    r"statusCode|[\"'](body|headers|path|resource|cookies)[\"']|queryStringParameters"
    r"|pathParameters|requestContext|httpMethod|rawPath|rawQueryString|routeKey|multiValue"
    r"|isBase64Encoded|Resolver\b|[Mm]angum|aws_lambda_powertools|APIGateway|" + _WSGI_ADAPTERS
)


def infer_event_kind(source: str) -> str:
    """The event a handler module expects when the deploy did not say: v1 for one that reads
    v1's fields (httpMethod, multiValueHeaders, event["path"], Powertools'
    APIGatewayRestResolver...) and none of v2's (rawPath, requestContext.http...), alb for a
    load balancer's, url for Powertools' function URL resolver; payload for a module that
    touches nothing of an HTTP event or response (a function called with a payload, as `aws
    lambda invoke` calls it); v2 otherwise (a handler reading both takes both)."""
    if source and not _HTTP.search(source):
        return "payload"
    reads = {kind for kind, pattern in _READS.items() if pattern.search(source)}
    if "v2" in reads:
        return "v2"
    for kind in ("alb", "url", "v1"):
        if kind in reads:
            return kind
    return "v2"


HTTP_EVENTS: dict[str, Builder] = {
    "v2": http_api_event,
    "v1": rest_api_event,
    "alb": alb_event,
    "url": function_url_event,
    "payload": lambda call, site: payload_event(call, site),
}
"""The event of an HTTP call, by `--lambda-event`."""


def scheduled_event(call: Incoming, site: Site) -> dict[str, Any]:
    """EventBridge's "Scheduled Event" for a schedule's tick (Ember's own fields of the tick,
    its cron and missed count, are not part of that shape)."""
    try:
        tick = orjson.loads(call.body)
    except orjson.JSONDecodeError:
        tick = {}
    if not isinstance(tick, dict):
        tick = {}
    try:
        at = dt.datetime.fromisoformat(str(tick.get("scheduled_at") or call.event_time))
        when = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rule = f"{site.function}-schedule-{tick.get('trigger', 0)}"
    return {
        "version": "0",
        "id": call.event_id or call.context.activation_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": when,
        "region": site.region,
        "resources": [f"arn:aws:events:{site.region}:{ACCOUNT_ID}:rule/{rule}"],
        "detail": {},
    }


def payload_event(call: Incoming, site: Site) -> Any:
    """A topic's or table's event as `aws lambda invoke` passes a payload: JSON decoded (an
    empty payload is {}); a payload that is not JSON as text, or base64 when it is binary."""
    body = call.body
    if not body:
        return {}
    mime = call.content_type.split(";", 1)[0].strip().lower()
    if not mime or mime == "application/json" or mime.endswith("+json"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return body.decode()
    except UnicodeDecodeError:
        return base64.b64encode(body).decode()


def event_of(call: Incoming, site: Site, http: Builder) -> Any:
    """The handler's event for any call: `http` builds it for an HTTP request."""
    if not call.is_event:
        return http(call, site)
    if call.source == "schedule":
        return scheduled_event(call, site)
    return payload_event(call, site)


def b64decode(text: str) -> bytes:
    """A proxy response's base64 body; ValueError names what is wrong with it."""
    try:
        return base64.b64decode(text)  # (line breaks, as encodebytes writes, are skipped)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            f"the handler's response has isBase64Encoded true but its body is not valid "
            f"base64 ({exc}): {text[:60]!r}; encode it with base64.b64encode(data).decode()"
        ) from None
