"""Tenancy (issue 18), as an attacker tries it: a pinned old version, names smuggled across
namespaces, Ember's own tables watched by a team. Real Postgres, real invoker processes."""

from __future__ import annotations

import textwrap

from tests.conftest import Running
from tests.integration.test_tenancy_auth import bearer, create_key

WHO = textwrap.dedent("""
    def handler(event, context):
        return {"authorization": dict(context.headers).get("Authorization")}
""")


async def test_a_pinned_version_is_as_private_as_its_function(running: Running) -> None:
    await running.deploy_ok("pay", WHO)  # version 1: public
    await running.deploy_ok("pay", WHO, auth="key", cors_origins=["https://shop.example.com"])
    for target in ("pay", "pay:1", "pay:2"):
        response = await running.call(target, {})
        body = await response.json()
        assert response.status == 401, (target, body)
        assert body["error"]["code"] == "key_required"
    async_call = await running.call("pay:1", {}, headers={"Prefer": "respond-async"})
    assert async_call.status == 401, await async_call.text()
    invoker = await create_key(running, "invoker")
    response = await running.call("pay:1", {}, headers=bearer(invoker))
    assert response.status == 200, await response.text()
    assert await response.json() == {"authorization": None}  # not handed to the old version
    # The function's CORS, too: version 1 had none.
    preflight = await running.http.options(
        f"{running.url}/fn/pay:1",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 403, await preflight.text()


async def test_a_team_cannot_watch_embers_own_database(running: Running) -> None:
    """Ember's database holds every namespace's activations, async payloads, keys and
    secrets: a team's table trigger there would hand them to its function."""
    await running.admin("PUT", "/v1/namespaces/team-a", json={})
    deployer = await create_key(running, "deployer", namespace="team-a")
    status, data = await running.admin(
        "POST",
        "/v1/functions",
        headers=bearer(deployer),
        json={"name": "spy", "source": WHO, "filename": "handler.py"},
    )
    assert status == 201, data
    for table in ("ember_activations", "public.ember_deliveries", '"ember_secrets"', "t"):
        status, data = await running.admin(
            "POST",
            "/v1/functions/spy/triggers",
            headers=bearer(deployer),
            json={"table": table, "on": "insert"},
        )
        assert status == 403, (table, data)
        assert data["error"]["code"] == "forbidden"
    # Not even the admin watches Ember's own tables (the delivery queue would feed itself).
    await running.deploy_ok("watcher", WHO)
    status, data = await running.admin(
        "POST", "/v1/functions/watcher/triggers", json={"table": "ember_deliveries"}
    )
    assert status == 403, data
    status, data = await running.admin("GET", "/v1/triggers?namespace=team-a")
    assert data["triggers"] == []
