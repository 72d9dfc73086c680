"""A SAM template's routes (the lambda style's `routes` option): the most specific route wins,
its variables are the event's pathParameters, and a path no route takes is API Gateway's 404."""

from __future__ import annotations

import pytest

from invoker.styles import StyleError
from invoker.styles.aws_lambda import bind
from invoker.styles.aws_routes import RoutesError, match_route, parse_routes
from tests.unit.test_style_lambda import (
    call,
    capture,
    info,
    lambda_environment,  # noqa: F401 (the autouse fixture: each test's environment restored)
    run,
)

ROUTES = "ANY /{proxy+};GET /items/{id};GET /items/new;POST /items/{id};ANY /files/{path+}"


def test_the_most_specific_route_wins() -> None:
    routes = parse_routes(ROUTES)

    def key(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        found = match_route(routes, method, path)
        return (found.route.key, found.parameters) if found else None

    assert key("GET", "/items/new") == ("GET /items/new", {})
    assert key("GET", "/items/42") == ("GET /items/{id}", {"id": "42"})
    assert key("POST", "/items/42/") == ("POST /items/{id}", {"id": "42"})
    assert key("DELETE", "/items/42") == ("ANY /{proxy+}", {"proxy": "items/42"})
    assert key("GET", "/files/a/b.txt") == ("ANY /files/{path+}", {"path": "a/b.txt"})
    assert match_route(parse_routes("GET /hello"), "GET", "/") is None
    assert match_route(parse_routes("GET /"), "GET", "/") is not None


def test_routes_that_cannot_be_read_are_refused() -> None:
    with pytest.raises(RoutesError, match="must come last"):
        parse_routes("GET /{all+}/tail")
    with pytest.raises(RoutesError, match="is not METHOD /path"):
        parse_routes("items/{id}")
    with pytest.raises(StyleError, match="routes option"):
        bind(lambda event, context: None, info(routes="GET items"))


def test_a_routed_call_gets_its_route_in_the_event() -> None:
    bound, seen = capture(routes=ROUTES)
    run(bound, call(method="GET", path="/items/42"))
    v2 = seen[-1][0]
    assert v2["routeKey"] == v2["requestContext"]["routeKey"] == "GET /items/{id}"
    assert v2["pathParameters"] == {"id": "42"}
    bound, seen = capture(routes=ROUTES, event="v1")
    run(bound, call(method="GET", path="/items/new"))
    v1 = seen[-1][0]
    assert v1["resource"] == v1["requestContext"]["resourcePath"] == "/items/new"
    assert v1["pathParameters"] is None


def test_a_path_no_route_takes_is_not_found_without_running_the_handler() -> None:
    bound, seen = capture(routes="GET /hello")
    status, _, body = run(bound, call(method="GET", path="/bye"))
    assert (status, body) == (404, b'{"message":"Not Found"}')
    assert seen == []
    assert run(bound, call(method="GET", path="/hello"))[0] == 200
