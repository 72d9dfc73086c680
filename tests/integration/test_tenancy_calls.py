"""Private functions, secrets and CORS on the call path (issue 18): real Postgres, real invoker
processes, real sockets."""

from __future__ import annotations

import hashlib
import logging
import textwrap

import asyncpg
import pytest
from cryptography.fernet import Fernet

from tests.conftest import PlatformFactory, Running
from tests.integration.test_tenancy_auth import bearer, create_key

WHO = textwrap.dedent("""
    def handler(event, context):
        return {"authorization": dict(context.headers).get("Authorization")}
""")

SECRET_VALUE = "hunter2-do-not-leak-7f3a"
READS_SECRET = textwrap.dedent("""
    import hashlib, os

    def handler(event, context):
        print("called")  # (logs must not hold the secret: the platform adds nothing of it)
        value = os.environ.get("DB_PASSWORD", "")
        return {"sha256": hashlib.sha256(value.encode()).hexdigest(), "user": os.environ["DB_USER"]}
""")


async def test_a_private_function_needs_an_invoker_key_of_its_namespace(running: Running) -> None:
    deployed = await running.deploy_ok("private", WHO, auth="key")
    assert deployed["auth"] == "key"
    refused = await running.call("private", {})
    body = await refused.json()
    assert refused.status == 401
    assert body["error"]["code"] == "key_required"
    assert "invoker key of namespace 'default'" in body["error"]["message"]

    reader = await create_key(running, "reader")
    other = await create_key(running, "invoker", namespace="team-b")
    for key in (reader, other):
        response = await running.call("private", {}, headers=bearer(key))
        body = await response.json()
        assert response.status == 403, body
        assert body["error"]["needs"] == "invoker"
        assert "invoker key of namespace 'default'" in body["error"]["message"]

    invoker = await create_key(running, "invoker")
    response = await running.call("private", {}, headers=bearer(invoker))
    assert response.status == 200, await response.text()
    # The handler does not see the key that let the call in.
    assert await response.json() == {"authorization": None}

    # A redeploy that does not say --auth keeps it private; --auth public opens it.
    assert (await running.deploy_ok("private", WHO))["auth"] == "key"
    assert (await running.call("private", {})).status == 401
    assert (await running.deploy_ok("private", WHO, auth="public"))["auth"] == "public"
    assert (await running.call("private", {})).status == 200

    # A public function keeps seeing its caller's Authorization header, as before.
    await running.deploy_ok("public", WHO)
    response = await running.call("public", {}, headers={"Authorization": "Bearer mine"})
    assert await response.json() == {"authorization": "Bearer mine"}


async def test_a_namespace_default_makes_its_functions_private(running: Running) -> None:
    status, data = await running.admin("PUT", "/v1/namespaces/team-c", json={"auth": "key"})
    assert status == 200, data
    deployed = await running.deploy_ok("svc", WHO)  # default namespace: still public
    assert deployed["auth"] == "public"
    status, data = await running.admin(
        "POST",
        "/v1/functions",
        headers={"X-Ember-Namespace": "team-c"},
        json={"name": "svc", "source": WHO, "filename": "handler.py"},
    )
    assert status == 201, data
    assert data["auth"] == "key"
    assert (await running.call("team-c/svc", {})).status == 401
    key = await create_key(running, "invoker", namespace="team-c")
    assert (await running.call("team-c/svc", {}, headers=bearer(key))).status == 200


async def test_a_secret_reaches_the_instance_and_nothing_else(
    running: Running, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, data = await running.admin(
        "PUT", "/v1/secrets/db", json={"values": {"DB_PASSWORD": SECRET_VALUE, "DB_USER": "app"}}
    )
    assert status == 200, data
    assert data == {**data, "secret": "db", "keys": ["DB_PASSWORD", "DB_USER"], "functions": []}
    missing = await running.deploy("uses-db", READS_SECRET, secrets=["nope"])
    assert missing.status == 400
    assert "fn secret set nope" in (await missing.json())["error"]["message"]
    await running.deploy_ok("uses-db", READS_SECRET, secrets=["db"])

    response = await running.call("uses-db", {})
    assert response.status == 200, await response.text()
    expected = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    assert await response.json() == {"sha256": expected, "user": "app"}

    # Rotating it rolls the warm instance: the next call sees the new value.
    status, data = await running.admin(
        "PUT", "/v1/secrets/db", json={"values": {"DB_PASSWORD": "rotated", "DB_USER": "app"}}
    )
    assert data["functions"] == ["uses-db"]
    response = await running.call("uses-db", {})
    assert (await response.json())["sha256"] == hashlib.sha256(b"rotated").hexdigest()
    await running.admin(
        "PUT", "/v1/secrets/db", json={"values": {"DB_PASSWORD": SECRET_VALUE, "DB_USER": "app"}}
    )
    assert (await (await running.call("uses-db", {})).json())["sha256"] == expected

    seen = []
    for path in (
        "/v1/functions",
        "/v1/functions/uses-db",
        "/v1/functions/uses-db/versions",
        "/v1/functions/uses-db/activations",
        "/v1/secrets",
        "/v1/audit",
    ):
        status, body = await running.admin("GET", path)
        assert status == 200
        seen.append(str(body))
    _, versions = await running.admin("GET", "/v1/functions/uses-db/versions")
    assert versions["versions"][0]["secrets"] == ["db"]
    async with running.http.get(f"{running.url}/metrics") as metrics:
        seen.append(await metrics.text())
    seen.append(caplog.text)
    for text in seen:
        assert SECRET_VALUE not in text
    # At rest: no table holds the value in the clear.
    conn = await asyncpg.connect(database_url)
    try:
        for table in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'ember_%'"
        ):
            name = table["tablename"]
            dump = await conn.fetchval(
                f"SELECT coalesce(string_agg(t::text, ''), '') FROM {name} t"
            )
            assert SECRET_VALUE not in dump, name
            assert SECRET_VALUE.encode().hex() not in dump, name
    finally:
        await conn.close()


async def test_cors_preflight_is_answered_by_the_gateway(running: Running) -> None:
    await running.deploy_ok("browser", WHO, cors_origins=["https://app.example.com"], auth="key")
    origin = {"Origin": "https://app.example.com"}
    async with running.http.options(
        f"{running.url}/fn/browser",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    ) as preflight:
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert preflight.headers["Access-Control-Allow-Headers"] == "content-type, authorization"
    async with running.http.options(
        f"{running.url}/fn/browser",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    ) as refused:
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "cors_origin_not_allowed"
    # The preflights never reached the function.
    _, data = await running.admin("GET", "/v1/functions/browser/activations")
    assert data["activations"] == []

    key = await create_key(running, "invoker")
    response = await running.call("browser", {}, headers={**origin, **bearer(key)})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    # An error answer carries it too: the browser lets the page read why.
    response = await running.call("browser", {}, headers=origin)
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    bad = await running.deploy("browser", WHO, cors_origins=["not an origin"])
    assert bad.status == 400


async def test_rotating_a_secret_rolls_the_instances_of_every_gateway(
    make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Replicas share the key (each state dir would otherwise make its own).
    monkeypatch.setenv("EMBER_SECRETS_KEY", Fernet.generate_key().decode())
    async with make_platform() as a, make_platform() as b:
        values = {"DB_PASSWORD": "first", "DB_USER": "app"}
        status, _ = await a.admin("PUT", "/v1/secrets/db", json={"values": values})
        assert status == 200
        await a.deploy_ok("uses-db", READS_SECRET, secrets=["db"])
        first = hashlib.sha256(b"first").hexdigest()
        assert (await (await b.call("uses-db", {})).json())["sha256"] == first
        old = {i.id for i in b.platform.scheduler.instances_of("uses-db")}
        assert old

        values["DB_PASSWORD"] = "second"
        status, data = await a.admin("PUT", "/v1/secrets/db", json={"values": values})
        assert data["functions"] == ["uses-db"]
        # b hears of it (NOTIFY) and replaces its instances.
        await b.platform.scheduler.wait_until(
            lambda: not old & {i.id for i in b.platform.scheduler.instances_of("uses-db")}, 10
        )
        response = await b.call("uses-db", {})
        body = await response.json()
        assert response.status == 200, body
        assert body["sha256"] == hashlib.sha256(b"second").hexdigest()
