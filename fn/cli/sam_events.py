"""A SAM function's Events and FunctionUrlConfig: HTTP routes (and the Lambda event shape they
imply), schedules, and the sources Ember does not have, each listed with its reason.

HTTP: Ember serves every function at /fn/NAME and every sub-path, any method, so an event
`Api GET /hello/{name}` is called at /fn/NAME/hello/ada. The event shape follows the source:
Api -> v1 (REST API), HttpApi -> v2 (v1 with PayloadFormatVersion 1.0), FunctionUrlConfig ->
url. The routes go to the lambda style as its `routes` option (`GET /hello/{name};ANY /x`), so
it can fill pathParameters and the route key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from fn.cli.cfn import Template, Unresolved, describe
from fn.cli.schedules import ScheduleRefused, aws_schedule
from fn.cli.stacks import Plan, Route, Schedule

_AUTH = (
    "Ember checks no authorizer, API key or IAM signature: anyone who reaches the gateway "
    "can call /fn/NAME"
)
_SOURCES = {
    "SQS": "SQS queue",
    "SNS": "SNS topic",
    "S3": "S3 bucket notification",
    "Kinesis": "Kinesis stream",
    "DynamoDB": "DynamoDB stream",
    "EventBridgeRule": "EventBridge event pattern",
    "CloudWatchEvent": "EventBridge event pattern",
    "CloudWatchLogs": "CloudWatch Logs subscription",
    "IoTRule": "AWS IoT rule",
    "MSK": "Kafka (MSK)",
    "SelfManagedKafka": "Kafka",
    "MQ": "Amazon MQ",
    "DocumentDB": "DocumentDB change stream",
}
_RETRIES = "Ember retries a failed event up to max_attempts, then keeps it in its dead letters"


@dataclass(slots=True, frozen=True, kw_only=True)
class Events:
    schedules: tuple[Schedule, ...] = ()
    routes: tuple[Route, ...] = ()
    style_options: dict[str, str] = field(default_factory=dict)


def plan_events(
    result: Plan, tpl: Template, logical_id: str, name: str, props: dict[str, Any]
) -> Events:
    schedules: list[Schedule] = []
    routes: list[Route] = []
    shapes: list[tuple[str, str]] = []  # (event shape, where from)
    events = props.get("Events")
    for event_id, event in (events if isinstance(events, dict) else {}).items():
        event = event if isinstance(event, dict) else {}
        kind = str(event.get("Type", ""))
        ev: dict[str, Any] = event.get("Properties") or {}
        if not isinstance(ev, dict):
            ev = {}
        where = f"{logical_id} event {event_id} ({kind})"
        try:
            if kind in ("Api", "HttpApi"):
                route, shape = _http(result, tpl, where, kind, event_id, ev)
                routes.append(route)
                shapes.append((shape, f"{kind} {event_id}"))
            elif kind in ("Schedule", "ScheduleV2"):
                schedule = _schedule(result, tpl, where, kind, event_id, ev)
                if schedule is not None:
                    schedules.append(schedule)
            elif kind in _SOURCES:
                extra = (
                    " (Ember watches Postgres tables: fn trigger add NAME --table T)"
                    if kind == "DynamoDB"
                    else ""
                )
                result.skip(
                    where,
                    f"Ember has no {_SOURCES[kind]} source{extra}; publish its messages to an "
                    f"Ember topic and subscribe the function: fn trigger add {name} --topic T",
                )
            else:
                result.skip(where, "no Ember equivalent")
        except Unresolved as exc:
            result.skip(where, str(exc))
    for route, shape in _definition_routes(tpl, logical_id):
        routes.append(route)
        shapes.append((shape, route.origin))
    url_config = props.get("FunctionUrlConfig")
    if isinstance(url_config, dict):
        routes.append(Route(method="ANY", path="", origin="FunctionUrlConfig"))
        shapes.append(("url", "FunctionUrlConfig"))
        if str(url_config.get("AuthType", "")).upper() == "AWS_IAM":
            result.skip(f"{logical_id} FunctionUrlConfig AuthType AWS_IAM", _AUTH)
        if "Cors" in url_config:
            result.skip(f"{logical_id} FunctionUrlConfig Cors", "Ember adds no CORS headers")
        if str(url_config.get("InvokeMode", "")).upper() == "RESPONSE_STREAM":
            result.skip(
                f"{logical_id} FunctionUrlConfig InvokeMode RESPONSE_STREAM",
                "the response is sent whole",
            )
    options: dict[str, str] = {}
    if shapes:
        chosen, chosen_from = shapes[0]
        options["event"] = chosen
        for shape, origin in shapes[1:]:
            if shape != chosen:
                result.skip(
                    f"{logical_id} {origin}",
                    f"needs the {shape} event, but a function gets one event shape: "
                    f"{chosen}, for {chosen_from}",
                )
    paths = [f"{r.method} {r.path}" for r in routes if r.path]
    if paths:
        options["routes"] = ";".join(paths)
    return Events(schedules=tuple(schedules), routes=tuple(routes), style_options=options)


_APIS = {
    "AWS::Serverless::Api": "v1",
    "AWS::ApiGateway::RestApi": "v1",
    "AWS::Serverless::HttpApi": "v2",
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def _definition_routes(tpl: Template, logical_id: str) -> list[tuple[Route, str]]:
    """The routes an API's OpenAPI document (`DefinitionBody`, or `Body` of a RestApi) sends to
    the function: each path and method whose `x-amazon-apigateway-integration` names it in its
    `uri` (`${AppFunction.Arn}`), with the event shape of that API (an HTTP API's integration
    may say `payloadFormatVersion: "1.0"`)."""
    found = []
    named = re.compile(rf"(?<![A-Za-z0-9]){re.escape(logical_id)}(?![A-Za-z0-9])")
    for api_id, resource in tpl.resources.items():
        resource = resource if isinstance(resource, dict) else {}
        shape = _APIS.get(str(resource.get("Type", "")))
        props = resource.get("Properties") if shape else None
        body = (
            (props.get("DefinitionBody") or props.get("Body")) if isinstance(props, dict) else None
        )
        paths = body.get("paths") if isinstance(body, dict) else None
        for path, operations in (paths if isinstance(paths, dict) else {}).items():
            for key, operation in (operations if isinstance(operations, dict) else {}).items():
                method = "ANY" if key == "x-amazon-apigateway-any-method" else key.upper()
                integration = (
                    operation.get("x-amazon-apigateway-integration")
                    if isinstance(operation, dict) and (key in _METHODS or method == "ANY")
                    else None
                )
                if not isinstance(integration, dict) or not named.search(
                    json.dumps(integration.get("uri"))
                ):
                    continue
                version = str(integration.get("payloadFormatVersion", ""))
                route = Route(
                    method=method, path=str(path), origin=f"{api_id} DefinitionBody {path}"
                )
                found.append((route, "v1" if version == "1.0" else shape or "v1"))
    return found


def _http(
    result: Plan, tpl: Template, where: str, kind: str, event_id: str, ev: dict[str, Any]
) -> tuple[Route, str]:
    method = tpl.text(ev.get("Method", "ANY")).upper()
    if method in ("X-AMAZON-APIGATEWAY-ANY-METHOD", "*"):
        method = "ANY"
    path = tpl.text(ev["Path"]) if "Path" in ev else ""
    if path and not path.startswith("/"):
        path = "/" + path
    if kind == "Api":
        shape = "v1"
    else:
        shape = "v1" if tpl.text(ev.get("PayloadFormatVersion", "2.0")) == "1.0" else "v2"
    if "Auth" in ev:
        result.skip(f"{where} Auth", _AUTH)
    for key, reason in (
        ("RequestModel", "Ember validates no request bodies"),
        ("RequestParameters", "Ember checks no required parameters"),
        ("RouteSettings", "Ember sets no per-route throttling"),
    ):
        if key in ev:
            result.skip(f"{where} {key}", reason)
    return Route(method=method, path=path, origin=f"{kind} {event_id}"), shape


def _schedule(
    result: Plan, tpl: Template, where: str, kind: str, event_id: str, ev: dict[str, Any]
) -> Schedule | None:
    key = "Schedule" if kind == "Schedule" else "ScheduleExpression"
    if key not in ev:
        result.skip(where, f"it has no {key}")
        return None
    expression = tpl.text(ev[key])
    enabled = tpl.text(ev.get("Enabled", "true")).lower() != "false"
    if not enabled or tpl.text(ev.get("State", "ENABLED")).upper() == "DISABLED":
        result.skip(where, f"{expression} is disabled in the template: no trigger added")
        return None
    try:
        cron = aws_schedule(expression)
    except ScheduleRefused as exc:
        result.skip(where, f"no trigger added: {exc}")
        return None
    if "Input" in ev:
        result.skip(
            f"{where} Input",
            "the function gets Ember's schedule event, not this fixed Input",
        )
    for prop, reason in (
        ("RetryPolicy", _RETRIES),
        ("DeadLetterConfig", _RETRIES),
        ("StartDate", "the schedule starts now"),
        ("EndDate", "the schedule does not end: delete its trigger (fn trigger delete ID)"),
    ):
        if prop in ev:
            result.skip(f"{where} {prop}", reason)
    window = ev.get("FlexibleTimeWindow")
    if isinstance(window, dict) and str(window.get("Mode", "OFF")).upper() != "OFF":
        result.skip(f"{where} FlexibleTimeWindow", "Ember fires each tick on time")
    zone = tpl.text(ev.get("ScheduleExpressionTimezone", "UTC")) if kind == "ScheduleV2" else "UTC"
    return Schedule(cron=cron, timezone=zone, origin=f"{kind} {event_id}: {expression}")


SCHEDULE_RESOURCES = ("AWS::Events::Rule", "AWS::Scheduler::Schedule")


def resource_schedules(
    result: Plan, tpl: Template, logical_id: str, kind: str, props: dict[str, Any]
) -> list[tuple[str, Schedule]] | None:
    """A CloudFormation schedule (an EventBridge rule or Scheduler schedule with a
    ScheduleExpression) as (target function's logical id, schedule) pairs; None when the
    resource is no schedule (an event pattern). Targets other than a function's
    `!GetAtt F.Arn` are listed."""
    if "ScheduleExpression" not in props:
        return None
    where = f"{logical_id} ({kind})"
    try:
        expression = tpl.text(props["ScheduleExpression"])
        zone = tpl.text(props.get("ScheduleExpressionTimezone", "UTC"))
        disabled = tpl.text(props.get("State", "ENABLED")).upper() == "DISABLED"
    except Unresolved as exc:
        result.skip(where, f"no trigger added: {exc}")
        return []
    if disabled:
        result.skip(where, f"{expression} is disabled in the template: no trigger added")
        return []
    try:
        cron = aws_schedule(expression)
    except ScheduleRefused as exc:
        result.skip(where, f"no trigger added: {exc}")
        return []
    targets = props.get("Targets") if kind == "AWS::Events::Rule" else [props.get("Target")]
    pairs = []
    for target in targets if isinstance(targets, list) else []:
        arn = target.get("Arn") if isinstance(target, dict) else None
        attribute = arn.get("Fn::GetAtt") if isinstance(arn, dict) else None
        if isinstance(attribute, list) and len(attribute) == 2 and attribute[1] == "Arn":
            schedule = Schedule(
                cron=cron, timezone=zone, origin=f"{kind} {logical_id}: {expression}"
            )
            pairs.append((str(attribute[0]), schedule))
            if isinstance(target, dict) and "Input" in target:
                result.skip(
                    f"{where} Input",
                    "the function gets Ember's schedule event, not this fixed Input",
                )
        else:
            result.skip(
                f"{where} target {describe(arn)}",
                "not a function of this template: no trigger added",
            )
    return pairs
