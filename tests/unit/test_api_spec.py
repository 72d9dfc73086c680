"""TypedDicts into JSON Schema (the OpenAPI document's components): what each Python type
becomes, required and optional keys, extra keywords, named components and the error default."""

from __future__ import annotations  # (api_spec reads NotRequired from string annotations too)

from typing import Annotated, Any, Literal, NotRequired, TypedDict

import pytest
from aiohttp import web

from gateway.api_spec import Schemas, document, operation, undescribed


class Inner(TypedDict):
    """An inner object."""

    n: int


class Outer(TypedDict):
    name: Annotated[str, ("pattern", "^[a-z]+$")]
    size: NotRequired[int | None]
    kind: Literal["a", "b"]
    tags: list[str]
    env: dict[str, str]
    inner: Inner
    anything: Any


def test_typeddicts_become_schemas_with_components() -> None:
    schemas = Schemas()
    assert schemas.of(Outer) == {"$ref": "#/components/schemas/Outer"}
    outer = schemas.components["Outer"]
    assert outer["required"] == ["anything", "env", "inner", "kind", "name", "tags"]
    assert outer["additionalProperties"] is True  # (an answer may grow)
    props = outer["properties"]
    assert props["name"] == {"type": "string", "pattern": "^[a-z]+$"}
    assert props["size"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert props["kind"] == {"enum": ["a", "b"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["env"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert props["inner"] == {"$ref": "#/components/schemas/Inner"}
    assert props["anything"] == {}
    assert schemas.components["Inner"]["description"] == "An inner object."
    request = Schemas()
    request.of(Inner, request=True)
    assert request.components["Inner"]["additionalProperties"] is False  # (names what is read)
    with pytest.raises(TypeError):
        schemas.of(set[int])


def test_document_describes_the_routes_and_names_the_undescribed() -> None:
    @operation("things", "Show a thing", query=Inner, responses={200: Outer})
    async def show(request: web.Request) -> web.Response:
        return web.Response()

    async def hidden(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/v1/things/{id}", show)
    app.router.add_post("/v1/other", hidden)
    app.router.add_get("/ui/page", hidden)  # (a page for people: not the API)
    assert undescribed(app) == ["POST /v1/other"]
    doc = document(app, version="1")
    op = doc["paths"]["/v1/things/{id}"]["get"]
    assert op["security"] == [{"token": []}]
    assert [p["name"] for p in op["parameters"]] == ["id", "X-Ember-Namespace", "n"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Outer"
    }
    assert op["responses"]["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "/v1/other" not in doc["paths"]
