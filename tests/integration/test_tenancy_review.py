"""Tenancy (issue 18), as an attacker tries it: a pinned old version, names smuggled across
namespaces, Ember's own tables watched by a team. Real Postgres, real invoker processes."""

from __future__ import annotations

import asyncio
import textwrap
import time

from fn.client import Client
from tests.conftest import TOKEN, Running
from tests.integration.test_tenancy_auth import bearer, create_key

WHO = textwrap.dedent("""
    def handler(event, context):
        return {"authorization": dict(context.headers).get("Authorization")}
""")
HELLO = textwrap.dedent("""
    def handler(event, context):
        return {"team": "a"}
""")
FAILS = textwrap.dedent("""
    def handler(event, context):
        raise context.PermanentError("no")
""")

PHISH = textwrap.dedent("""
    def handler(event, context):
        seen = dict(context.headers).get("Authorization")
        if seen:
            return {"stolen": seen}
        return context.response(
            {"error": {"code": "key_required", "message": "send your key"}}, status=401
        )
""")


async def test_fn_invoke_sends_its_token_only_to_the_gateways_refusal(running: Running) -> None:
    """`fn invoke` resends its token when a private function's gateway asks for a key: a
    public function that answers the same 401 itself must not get the admin token."""
    await running.deploy_ok("phish", PHISH)
    client = Client(url=running.url, token=TOKEN)
    reply = await asyncio.to_thread(client.invoke, "phish", b"{}", "application/json")
    assert reply.status == 401, reply.body
    assert TOKEN.encode() not in reply.body
    await running.deploy_ok("private", WHO, auth="key")  # the gateway's own 401: resent
    reply = await asyncio.to_thread(client.invoke, "private", b"{}", "application/json")
    assert (reply.status, reply.json()) == (200, {"authorization": None})


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


async def test_a_key_of_default_cannot_reach_another_namespace_by_its_stored_names(
    running: Running,
) -> None:
    """`team-a.fail` and `team-a/orders` are how team A's function and topic are stored: as
    names given by a key of `default` they are refused, not taken as team A's."""
    team_a = await create_key(running, "deployer", namespace="team-a")
    mine = await create_key(running, "deployer")
    status, data = await running.admin(
        "POST",
        "/v1/functions",
        headers=bearer(team_a),
        json={"name": "fail", "source": FAILS, "filename": "handler.py", "max_attempts": 1},
    )
    assert status == 201, data
    status, _ = await running.admin("PUT", "/v1/topics/orders", headers=bearer(team_a))
    assert status == 201

    response = await running.http.post(
        f"{running.url}/fn/team-a/fail",
        json={},
        headers={**bearer(team_a), "Prefer": "respond-async"},
    )
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert (accepted["function"], accepted["namespace"]) == ("fail", "team-a")  # as called
    activation = accepted["activation_id"]
    deadline = time.monotonic() + 20
    while True:  # (the delivery runs off the request)
        _, data = await running.admin(
            "GET", f"/v1/activations/{activation}", headers=bearer(team_a)
        )
        if data.get("status") == "dead":
            break
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.02)

    for method, path, body in (
        ("POST", "/v1/dlq/redrive", {"function": "team-a.fail"}),
        ("GET", "/v1/dlq?function=team-a.fail", None),
        ("GET", "/v1/triggers?function=team-a.fail", None),
    ):
        status, data = await running.admin(method, path, headers=bearer(mine), json=body)
        assert (status, data["error"]["code"]) == (400, "bad_name"), (path, data)
    status, data = await running.admin(
        "POST", "/v1/dlq/redrive", headers=bearer(mine), json={"ids": [activation]}
    )
    assert (status, data) == (200, {"redriven": []})
    _, data = await running.admin("GET", f"/v1/activations/{activation}", headers=bearer(team_a))
    assert (data["status"], data["redrives"]) == ("dead", 0)

    # A newer dead letter of default does not push team A's out of its own list.
    await running.deploy_ok("fails-too", FAILS, max_attempts=1)
    response = await running.call("fails-too", {}, headers={"Prefer": "respond-async"})
    theirs = (await response.json())["activation_id"]
    deadline = time.monotonic() + 20
    while (await running.admin("GET", f"/v1/activations/{theirs}"))[1].get("status") != "dead":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    _, data = await running.admin("GET", "/v1/dlq?limit=1", headers=bearer(team_a))
    assert [d["id"] for d in data["dead"]] == [activation]
    _, data = await running.admin("GET", "/v1/dlq?limit=1", headers=bearer(mine))
    assert [d["id"] for d in data["dead"]] == [theirs]

    status, data = await running.admin("DELETE", "/v1/topics/team-a%2Forders", headers=bearer(mine))
    assert (status, data["error"]["code"]) == (400, "bad_topic"), data
    _, data = await running.admin("GET", "/v1/topics", headers=bearer(team_a))
    assert [t["name"] for t in data["topics"]] == ["orders"]


async def test_a_rollback_does_not_open_a_private_function_by_the_way(running: Running) -> None:
    await running.deploy_ok("pay", WHO)  # version 1: public
    await running.deploy_ok("pay", WHO, auth="key")  # version 2: private
    for body in ({}, {"to": 1}):
        status, data = await running.admin("POST", "/v1/functions/pay/rollback", json=body)
        assert (status, data["error"]["code"]) == (409, "rollback_opens_function"), data
        assert "--auth public" in data["error"]["message"]
    assert (await running.call("pay", {})).status == 401  # still private, still version 2
    status, data = await running.admin(
        "POST", "/v1/functions/pay/rollback", json={"to": 1, "auth": "public"}
    )
    assert (status, data["active_version"]) == (200, 1), data
    assert (await running.call("pay", {})).status == 200
    # Rolling forth to a private version needs nothing said.
    status, data = await running.admin("POST", "/v1/functions/pay/rollback", json={"to": 2})
    assert (status, data["active_version"]) == (200, 2), data
    assert (await running.call("pay", {})).status == 401


async def test_fn_invoke_with_a_teams_key_calls_the_teams_function(running: Running) -> None:
    """`FN_TOKEN=ek_...` without FN_NAMESPACE: the CLI acts in the key's namespace, calls
    included (not default's function of the same name)."""
    await running.deploy_ok("orders", WHO)  # default's, public
    await running.admin("PUT", "/v1/namespaces/team-a", json={"auth": "key"})
    deployer = await create_key(running, "deployer", namespace="team-a")
    status, data = await running.admin(
        "POST",
        "/v1/functions",
        headers=bearer(deployer),
        json={"name": "orders", "source": HELLO, "filename": "handler.py"},
    )
    assert (status, data["auth"]) == (201, "key"), data
    invoker = await create_key(running, "invoker", namespace="team-a")
    reply = await asyncio.to_thread(
        Client(url=running.url, token=invoker).invoke, "orders", b"{}", "application/json"
    )
    assert (reply.status, reply.json()) == (200, {"team": "a"}), reply.body


async def test_a_cors_answer_varies_by_origin_for_every_origin(running: Running) -> None:
    await running.deploy_ok("shop", WHO, cors_origins=["https://shop.example.com"])
    for origin in ("https://evil.example", "https://shop.example.com"):
        response = await running.call("shop", {}, headers={"Origin": origin})
        assert response.status == 200
        assert "Origin" in response.headers.getall("Vary", []), (origin, response.headers)


async def test_the_audit_trail_says_what_an_action_was_about(running: Running) -> None:
    """`POST /v1/functions` and `POST /v1/keys` alone do not say which function was deployed
    or which key made; a secret's value is never there."""
    deployer = await create_key(running, "deployer", namespace="team-a")
    key_id = deployer.split("_")[1]
    status, _ = await running.admin(
        "POST",
        "/v1/functions",
        headers=bearer(deployer),
        json={"name": "orders", "source": WHO, "filename": "handler.py"},
    )
    assert status == 201
    status, _ = await running.admin(
        "PUT", "/v1/secrets/db", headers=bearer(deployer), json={"values": {"PW": "s3cr3t-v4lue"}}
    )
    assert status == 200
    status, data = await running.admin("GET", "/v1/audit")
    assert status == 200
    entries = [(e["actor"], e["action"], e["subject"]) for e in data["audit"]]
    assert entries[:3] == [
        (f"key:{key_id}", "PUT /v1/secrets/{secret}", ""),
        (f"key:{key_id}", "POST /v1/functions", "function orders"),
        ("admin", "POST /v1/keys", f"key {key_id} (deployer of team-a)"),
    ]
    assert "s3cr3t-v4lue" not in str(data)


async def test_a_keys_refused_read_is_audited(running: Running) -> None:
    """A key reading another namespace, or the admin's keys, is refused and recorded: the
    trail's "refused ones included" holds for reads too."""
    reader = await create_key(running, "reader", namespace="team-a")
    key_id = reader.split("_")[1]
    status, _ = await running.admin("GET", "/v1/functions", headers=bearer(reader, "team-b"))
    assert status == 403
    status, _ = await running.admin("GET", "/v1/keys", headers=bearer(reader))
    assert status == 403
    status, _ = await running.admin("GET", "/v1/functions", headers=bearer(reader))
    assert status == 200  # an allowed read: not an action
    _, data = await running.admin("GET", "/v1/audit")
    entries = [(e["actor"], e["action"], e["status"]) for e in data["audit"]]
    assert entries[:3] == [
        (f"key:{key_id}", "GET /v1/keys", 403),
        (f"key:{key_id}", "GET /v1/functions", 403),
        ("admin", "POST /v1/keys", 201),
    ]


READS_SECRET = textwrap.dedent("""
    import os

    def handler(event, context):
        return {"pw": os.environ.get("PW")}
""")


async def test_rotating_a_secret_rolls_a_pinned_version_that_reads_it(running: Running) -> None:
    """Version 1 reads the secret, version 2 (active) does not: a warm instance of `fn:1`
    must not keep the old value after a rotation."""
    status, _ = await running.admin("PUT", "/v1/secrets/db", json={"values": {"PW": "old"}})
    assert status == 200
    await running.deploy_ok("app", READS_SECRET, secrets=["db"])
    await running.deploy_ok("app", WHO)
    response = await running.call("app:1", {})
    assert await response.json() == {"pw": "old"}  # warm now
    status, data = await running.admin("PUT", "/v1/secrets/db", json={"values": {"PW": "new"}})
    assert (status, data["functions"]) == (200, ["app"])
    response = await running.call("app:1", {})
    assert await response.json() == {"pw": "new"}


async def test_deleting_a_secret_takes_it_out_of_the_warm_instances(running: Running) -> None:
    status, _ = await running.admin("PUT", "/v1/secrets/db", json={"values": {"PW": "gone"}})
    assert status == 200
    await running.deploy_ok("app", READS_SECRET, secrets=["db"])
    response = await running.call("app", {})
    assert await response.json() == {"pw": "gone"}  # warm now
    status, data = await running.admin("DELETE", "/v1/secrets/db")
    assert status == 200, data
    response = await running.call("app", {})
    body = await response.text()
    assert response.status >= 500, body  # no instance can start without it
    assert '"pw"' not in body
    assert "secret 'db'" in body
    assert data["functions"] == ["app"]
