"""The Lambda style in process: the events built from HTTP calls (API Gateway v2 and v1, load
balancer, function URL) and from topics, tables and schedules."""

from __future__ import annotations

import base64
import time

import orjson

from tests.unit.test_style_lambda import (
    ACTIVATION,
    HEADERS,
    PEER,
    call,
    event_of,
    lambda_environment,  # noqa: F401 (the autouse fixture: each test's environment restored)
)

# -- HTTP events ----------------------------------------------------------------------------


def test_http_api_v2_event() -> None:
    event = event_of(
        call(
            b'{"a": 1}',
            method="PUT",
            path="/items/7",
            query="name=ann&tag=a&tag=b&flag&q=a%20b+c",
            headers=HEADERS,
            content_type="application/json",
        )
    )
    context = event.pop("requestContext")
    assert event == {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/items/7",
        "rawQueryString": "name=ann&tag=a&tag=b&flag&q=a%20b+c",
        "cookies": ["session=abc", "theme=dark", "lang=en"],
        "headers": {
            "host": "localhost:8080",
            "user-agent": "curl/8.5.0",
            "x-forwarded-for": "203.0.113.7, 10.0.0.1",
            "accept": "text/html,application/json",
            "content-type": "application/json",
        },
        "queryStringParameters": {"name": "ann", "tag": "a,b", "flag": "", "q": "a b c"},
        "body": '{"a": 1}',
        "pathParameters": {"proxy": "items/7"},
        "isBase64Encoded": False,
    }
    assert time.strptime(context.pop("time"), "%d/%b/%Y:%H:%M:%S +0000")
    assert abs(context.pop("timeEpoch") / 1000 - time.time()) < 5
    assert context == {
        "accountId": "000000000000",
        "apiId": "ember",
        "domainName": "localhost:8080",
        "domainPrefix": "localhost",
        "http": {
            "method": "PUT",
            "path": "/items/7",
            "protocol": "HTTP/1.1",
            "sourceIp": PEER,  # the gateway's peer, not X-Forwarded-For
            "userAgent": "curl/8.5.0",
        },
        "requestId": ACTIVATION,
        "routeKey": "$default",
        "stage": "$default",
    }


def test_v2_leaves_out_what_the_request_has_none_of_and_base64_encodes_binary() -> None:
    event = event_of(call(method="GET", headers=[("Host", "fn.example.com")], client=""))
    for absent in ("cookies", "queryStringParameters", "body", "pathParameters"):
        assert absent not in event
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["http"]["sourceIp"] == "unknown"
    assert event["requestContext"]["domainPrefix"] == "fn"

    png = b"\x89PNG\r\n\x1a\n\x00"
    event = event_of(call(png, content_type="image/png"))
    assert (event["body"], event["isBase64Encoded"]) == (base64.b64encode(png).decode(), True)
    # text/* and +json are text; so are a form and a body without a type when they decode.
    form = event_of(call(b"a=1", content_type="application/x-www-form-urlencoded"))
    assert (form["body"], form["isBase64Encoded"]) == ("a=1", False)
    upload = event_of(call(b"--b\r\n", content_type="multipart/form-data; boundary=b"))
    assert (upload["body"], upload["isBase64Encoded"]) == ("LS1iDQo=", True)
    assert event_of(call(b"<p>", content_type="text/html; charset=utf-8"))["body"] == "<p>"
    assert event_of(call(b"{}", content_type="application/vnd.api+json"))["body"] == "{}"
    assert event_of(call(b"plain"))["body"] == "plain"  # no Content-Type: text if it decodes
    assert event_of(call(b"\xff\xfe"))["isBase64Encoded"] is True


def test_function_url_event_is_v2_without_path_parameters() -> None:
    event = event_of(call(b"hi", path="/a/b", content_type="text/plain"), event="url")
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/a/b"
    assert "pathParameters" not in event
    assert event["requestContext"]["http"]["path"] == "/a/b"
    assert event["body"] == "hi"


def test_rest_api_v1_event() -> None:
    event = event_of(
        call(
            b"a=1&b=2",
            method="POST",
            path="/items/7",
            query="tag=a&tag=b&name=ann%20b",
            headers=HEADERS,
            content_type="application/x-www-form-urlencoded",
        ),
        event="v1",
    )
    context = event.pop("requestContext")
    assert event == {
        "resource": "/{proxy+}",
        "path": "/items/7",
        "httpMethod": "POST",
        "headers": {
            "Host": "localhost:8080",
            "User-Agent": "curl/8.5.0",
            "X-Forwarded-For": "203.0.113.7, 10.0.0.1",
            "Accept": "application/json",
            "Cookie": "lang=en",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        "multiValueHeaders": {
            "Host": ["localhost:8080"],
            "User-Agent": ["curl/8.5.0"],
            "X-Forwarded-For": ["203.0.113.7, 10.0.0.1"],
            "Accept": ["text/html", "application/json"],
            "Cookie": ["session=abc; theme=dark", "lang=en"],
            "Content-Type": ["application/x-www-form-urlencoded"],
        },
        "queryStringParameters": {"tag": "b", "name": "ann b"},
        "multiValueQueryStringParameters": {"tag": ["a", "b"], "name": ["ann b"]},
        "pathParameters": {"proxy": "items/7"},
        "stageVariables": None,
        "body": "a=1&b=2",
        "isBase64Encoded": False,
    }
    assert context["identity"]["sourceIp"] == PEER
    assert context["identity"]["userAgent"] == "curl/8.5.0"
    assert context["identity"]["cognitoIdentityId"] is None
    assert (context["requestId"], context["extendedRequestId"]) == (ACTIVATION, ACTIVATION)
    assert (context["httpMethod"], context["path"], context["stage"]) == (
        "POST",
        "/items/7",
        "$default",
    )
    assert context["resourcePath"] == "/{proxy+}"
    assert time.strptime(context["requestTime"], "%d/%b/%Y:%H:%M:%S +0000")
    assert isinstance(context["requestTimeEpoch"], int)

    root = event_of(call(method="GET"), event="v1")
    assert (root["resource"], root["pathParameters"], root["body"]) == ("/", None, None)
    assert root["queryStringParameters"] is None
    assert root["multiValueQueryStringParameters"] is None
    binary = event_of(call(b"\xff\x00", content_type="application/octet-stream"), event="v1")
    assert (binary["body"], binary["isBase64Encoded"]) == ("/wA=", True)


def test_alb_event() -> None:
    event = event_of(
        call(b"", method="GET", path="/x", query="a=1&a=2&b=c%20d", headers=HEADERS),
        event="alb",
    )
    assert event == {
        "requestContext": {
            "elb": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:"
                "targetgroup/orders/0000000000000000"
            }
        },
        "httpMethod": "GET",
        "path": "/x",
        "queryStringParameters": {"a": "2", "b": "c%20d"},  # as sent: not decoded
        "headers": {
            "host": "localhost:8080",
            "user-agent": "curl/8.5.0",
            "x-forwarded-for": "203.0.113.7, 10.0.0.1",
            "accept": "application/json",
            "cookie": "lang=en",
        },
        "body": "",
        "isBase64Encoded": False,
    }
    assert event_of(call(method="GET"), event="alb")["queryStringParameters"] == {}


def test_an_async_call_is_an_http_request_timed_when_it_was_submitted() -> None:
    event = event_of(
        call(
            b'{"n": 1}',
            content_type="application/json",
            source="async",
            event_id="e1",
            event_time="2024-03-12T19:03:58.123000+00:00",
        )
    )
    assert event["body"] == '{"n": 1}'
    assert event["requestContext"]["time"] == "12/Mar/2024:19:03:58 +0000"
    assert event["requestContext"]["timeEpoch"] == 1710270238123


# -- other events ---------------------------------------------------------------------------


def test_topic_and_table_events_are_their_payload() -> None:
    topic = call(b'{"order": 7}', content_type="application/json", source="topic", topic="t")
    assert event_of(topic) == {"order": 7}
    assert event_of(call(b"[1, 2]", source="table")) == [1, 2]
    assert event_of(call(b"", source="topic")) == {}
    assert event_of(call(b"hello", content_type="text/plain", source="topic")) == "hello"
    assert event_of(call(b"12", content_type="text/plain", source="topic")) == "12"
    assert event_of(call(b"\xff\x01", content_type="image/png", source="topic")) == "/wE="


def test_a_schedule_tick_is_an_eventbridge_scheduled_event() -> None:
    tick = orjson.dumps(
        {
            "trigger": 4,
            "cron": "*/5 * * * *",
            "timezone": "Europe/Paris",
            "scheduled_at": "2024-03-12T20:05:00+01:00",
            "missed": 0,
        }
    )
    event = event_of(call(tick, content_type="application/json", source="schedule", event_id="d-1"))
    assert event == {
        "version": "0",
        "id": "d-1",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2024-03-12T19:05:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/orders-schedule-4"],
        "detail": {},
    }
