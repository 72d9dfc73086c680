"""The OpenAPI document against the gateway that serves it: every route is described (from
the handlers' own types), the document and its rendering are served without the token, and
schemathesis (stateless: examples, coverage and fuzzing of every operation, a few cases each)
finds no 500 and no answer that breaks the document."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from gateway.api_spec import undescribed
from gateway.app import build_app
from tests.conftest import TOKEN, Running

ST = str(Path(sys.executable).parent / "schemathesis")


async def test_every_route_is_described(running: Running) -> None:
    assert undescribed(build_app(running.platform)) == []
    async with running.http.get(f"{running.url}/v1/openapi.json") as response:
        assert response.status == 200  # no token: the document is public
        doc = await response.json()
    assert doc["openapi"] == "3.1.0"
    operations = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert ("post", "/v1/functions") in operations
    assert ("put", "/fn/{name}/{tail}") in operations
    deploy = doc["paths"]["/v1/functions"]["post"]
    assert deploy["security"] == [{"token": []}]
    body = deploy["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/DeployRequest"}
    schema = doc["components"]["schemas"]["DeployRequest"]
    assert schema["required"] == ["name"]
    assert "source" in schema["properties"]
    async with running.http.get(f"{running.url}/v1/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "openapi.json" in await response.text()


@pytest.mark.timeout(240)
async def test_schemathesis_finds_nothing(running: Running, tmp_path: Path) -> None:
    await running.deploy_ok("echo", "def handler(event, context):\n    return event\n")
    env = {
        **os.environ,
        # a deploy it makes with requirements fails at once, without asking any index
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "SCHEMATHESIS_HOOKS": "",
    }
    process = await asyncio.create_subprocess_exec(
        ST,
        "run",
        f"{running.url}/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "8",
        "--generation-deterministic",
        "--no-shrink",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--warnings",
        "off",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
    assert "No issues found" in text, text[-3000:]
