"""Keys, roles and namespaces on the admin API (issue 18): every route of the admin API is
classified and each role is allowed exactly its routes; revoked and expired keys are refused
by every gateway; namespaces keep teams apart; every admin action is audited. Real Postgres,
real gateways on sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import textwrap
import time
from typing import Any

from aiohttp import web

from gateway.app import build_app
from gateway.auth import RANKS, ROUTES
from gateway.keyring import hash_secret
from tests.conftest import PlatformFactory, Running

HELLO = textwrap.dedent("""
    def handler(event, context):
        return {"function": context.function, "hello": event.get("name", "world")}
""")


def admin_routes(running: Running) -> set[tuple[str, str]]:
    """Every (method, route) the admin API serves, from the application itself."""
    app = build_app(running.platform)
    found = set()
    for resource in app.router.resources():
        sub = getattr(resource, "_app", None)
        if not isinstance(sub, web.Application):
            continue
        for route in sub.router.routes():
            assert route.resource is not None
            found.add((route.method, route.resource.canonical))
    assert found, "the admin sub-application was not found"
    return found


async def create_key(running: Running, role: str, namespace: str = "default", **extra: Any) -> str:
    status, data = await running.admin(
        "POST", "/v1/keys", json={"namespace": namespace, "role": role, **extra}
    )
    assert status == 201, data
    assert re.fullmatch(r"ek_[0-9a-f]{12}_\S{40,}", data["key"])
    return str(data["key"])


def bearer(key: str, namespace: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if namespace is not None:
        headers["X-Ember-Namespace"] = namespace
    return headers


async def test_every_admin_route_is_classified(running: Running) -> None:
    served = admin_routes(running)
    unclassified = served - set(ROUTES)
    assert not unclassified, f"add these routes to gateway/auth.py ROUTES: {sorted(unclassified)}"
    assert not set(ROUTES) - served, "ROUTES names routes that do not exist"


async def test_each_role_is_allowed_exactly_its_routes(running: Running) -> None:
    keys = {role: await create_key(running, role) for role in ("reader", "invoker", "deployer")}
    team = await create_key(running, "deployer", namespace="team-a")
    for method, route in sorted(admin_routes(running)):
        path = re.sub(r"\{[^}]+\}", "nothing-here", route)
        rule = ROUTES[(method, route)]
        for role, key in [*keys.items(), ("team-a deployer", team)]:
            rank = RANKS["deployer" if role == "team-a deployer" else role]
            allowed = rank >= RANKS[rule.role] and not (rule.shared and role == "team-a deployer")
            async with running.http.request(
                method, f"{running.url}{path}", headers=bearer(key), json={}
            ) as response:
                body = await response.json()
            where = f"{role} on {method} {route}: {response.status} {body}"
            if allowed:
                assert response.status not in (401, 403), where
            else:
                assert response.status == 403, where
                assert body["error"]["code"] == "forbidden", where
                assert body["error"]["needs"] == rule.role, where
        # The admin token may use every route.
        status, body = await running.admin(method, path, json={})
        assert status not in (401, 403), (method, route, body)


async def test_missing_wrong_and_unknown_credentials_are_401(running: Running) -> None:
    for headers, code in [
        ({}, "unauthorized"),
        ({"Authorization": "Bearer nope"}, "unauthorized"),
        ({"Authorization": "Bearer ek_000000000000_nope"}, "unauthorized"),
    ]:
        async with running.http.get(f"{running.url}/v1/functions", headers=headers) as response:
            body = await response.json()
        assert response.status == 401, body
        assert body["error"]["code"] == code
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_revoked_key_is_refused_at_once_here_and_on_another_gateway(
    make_platform: PlatformFactory,
) -> None:
    async with make_platform() as a, make_platform() as b:
        loads = b.platform.keys.loads
        key = await create_key(a, "reader")
        await b.platform.keys.wait_loaded(loads, timeout_s=10)  # the NOTIFY reached b
        for gateway in (a, b):
            async with gateway.http.get(
                f"{gateway.url}/v1/functions", headers=bearer(key)
            ) as response:
                assert response.status == 200, await response.text()
        key_id = key.split("_")[1]
        loads = b.platform.keys.loads
        status, data = await a.admin("DELETE", f"/v1/keys/{key_id}")
        assert status == 200, data
        assert data["revoked_at"], data
        # This gateway applied it before answering.
        async with a.http.get(f"{a.url}/v1/functions", headers=bearer(key)) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "key_revoked"
        # The other, as soon as the notification arrives: no TTL keeps the key alive.
        await b.platform.keys.wait_loaded(loads, timeout_s=10)
        async with b.http.get(f"{b.url}/v1/functions", headers=bearer(key)) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "key_revoked"


async def test_an_expired_key_is_refused(running: Running) -> None:
    store = running.platform.store
    await store.create_api_key(
        id="0123456789ab",
        namespace="default",
        role="deployer",
        secret_hash=hash_secret("s3cret"),
        description="",
        created_by="admin",
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
    )
    await running.platform.keys.reload()
    async with running.http.get(
        f"{running.url}/v1/functions", headers=bearer("ek_0123456789ab_s3cret")
    ) as response:
        body = await response.json()
    assert response.status == 401
    assert body["error"]["code"] == "key_expired"
    # A key with an expiry ahead works.
    key = await create_key(running, "reader", expires_in="1h")
    async with running.http.get(f"{running.url}/v1/functions", headers=bearer(key)) as response:
        assert response.status == 200


async def test_namespaces_keep_teams_apart(running: Running) -> None:
    team_a = await create_key(running, "deployer", namespace="team-a")
    await running.deploy_ok("hello", HELLO)
    status, data = await running.admin(
        "POST",
        "/v1/functions",
        headers=bearer(team_a),
        json={"name": "hello", "source": HELLO.replace("world", "team-a")},
    )
    assert status == 201, data
    assert (data["function"], data["namespace"], data["version"]) == ("hello", "team-a", 1)

    plain = await (await running.call("hello", {})).json()
    scoped = await (await running.call("team-a/hello", {})).json()
    assert plain == {"function": "hello", "hello": "world"}
    assert scoped["hello"] == "team-a"

    _, listed = await running.admin("GET", "/v1/functions", headers=bearer(team_a))
    assert [(f["name"], f["namespace"]) for f in listed["functions"]] == [("hello", "team-a")]
    _, listed = await running.admin("GET", "/v1/functions")
    assert [(f["name"], f["namespace"]) for f in listed["functions"]] == [("hello", "default")]
    _, listed = await running.admin("GET", "/v1/functions", headers={"X-Ember-Namespace": "team-a"})
    assert [f["namespace"] for f in listed["functions"]] == ["team-a"]

    # team-a's key cannot act in default, nor delete default's hello by its name.
    status, data = await running.admin(
        "DELETE", "/v1/functions/hello", headers=bearer(team_a, "default")
    )
    assert status == 403, data
    assert "team-a" in data["error"]["message"], data
    status, _ = await running.admin("DELETE", "/v1/functions/hello", headers=bearer(team_a))
    assert status == 200
    assert (await running.call("hello", {})).status == 200  # default's still there
    missing = await running.call("team-a/hello", {})
    assert missing.status == 404
    assert "--namespace team-a" in (await missing.json())["error"]["message"]


async def test_every_admin_action_is_audited(running: Running) -> None:
    reader = await create_key(running, "reader")
    deployer = await create_key(running, "deployer")
    await running.admin(
        "POST", "/v1/functions", headers=bearer(deployer), json={"name": "audited", "source": HELLO}
    )
    await running.admin("DELETE", "/v1/functions/audited", headers=bearer(reader))  # refused
    await running.admin("GET", "/v1/functions", headers=bearer(reader))  # a read: not an action
    status, data = await running.admin("GET", "/v1/audit")
    assert status == 200
    entries = [(e["actor"], e["action"], e["path"], e["status"]) for e in data["audit"]]
    deployer_id, reader_id = deployer.split("_")[1], reader.split("_")[1]
    assert entries[:4] == [
        (f"key:{reader_id}", "DELETE /v1/functions/{name}", "/v1/functions/audited", 403),
        (f"key:{deployer_id}", "POST /v1/functions", "/v1/functions", 201),
        ("admin", "POST /v1/keys", "/v1/keys", 201),
        ("admin", "POST /v1/keys", "/v1/keys", 201),
    ]
    assert all(e["at"] and e["namespace"] == "default" for e in data["audit"])
    # A key sees its namespace's trail only.
    team = await create_key(running, "deployer", namespace="team-b")
    _, data = await running.admin("GET", "/v1/audit", headers=bearer(team))
    assert data["audit"] == []


async def test_triggers_and_dead_letters_are_per_namespace(running: Running) -> None:
    team_a = await create_key(running, "deployer", namespace="team-a")
    mine = await create_key(running, "deployer")
    await running.deploy_ok("ticker", HELLO)
    status, data = await running.admin(
        "POST", "/v1/functions", headers=bearer(team_a), json={"name": "ticker", "source": HELLO}
    )
    assert status == 201, data
    cron = {"cron": "0 0 1 1 *"}
    status, ours = await running.admin(
        "POST", "/v1/functions/ticker/triggers", headers=bearer(mine), json=cron
    )
    assert status == 201, ours
    status, theirs = await running.admin(
        "POST", "/v1/functions/ticker/triggers", headers=bearer(team_a), json=cron
    )
    assert status == 201, theirs

    _, listed = await running.admin("GET", "/v1/triggers", headers=bearer(team_a))
    assert [t["id"] for t in listed["triggers"]] == [theirs["id"]]
    _, listed = await running.admin("GET", "/v1/triggers?function=ticker", headers=bearer(mine))
    assert [t["id"] for t in listed["triggers"]] == [ours["id"]]
    status, _ = await running.admin("DELETE", f"/v1/triggers/{ours['id']}", headers=bearer(team_a))
    assert status == 404  # another namespace's trigger: as if there were none
    status, _ = await running.admin(
        "DELETE", f"/v1/triggers/{theirs['id']}", headers=bearer(team_a)
    )
    assert status == 200
    status, data = await running.admin("GET", "/v1/dlq", headers=bearer(team_a))
    assert (status, data) == (200, {"dead": []})


async def test_topics_are_per_namespace(running: Running) -> None:
    deployer = await create_key(running, "deployer", namespace="team-a")
    invoker = await create_key(running, "invoker", namespace="team-a")
    status, data = await running.admin("PUT", "/v1/topics/orders", headers=bearer(deployer))
    assert (status, data["topic"]) == (201, "orders")
    status, data = await running.admin(
        "POST", "/v1/functions", headers=bearer(deployer), json={"name": "sink", "source": HELLO}
    )
    assert status == 201, data
    status, data = await running.admin(
        "POST", "/v1/functions/sink/triggers", headers=bearer(deployer), json={"topic": "orders"}
    )
    assert (status, data["topic"]) == (201, "orders")

    _, listed = await running.admin("GET", "/v1/topics")  # the admin, in default
    assert [t["name"] for t in listed["topics"]] == []
    status, data = await running.admin("POST", "/v1/events/orders", json={"name": "x"})
    assert (status, data["error"]["code"]) == (404, "topic_not_found")

    status, data = await running.admin(
        "POST", "/v1/events/orders", headers=bearer(invoker), json={"name": "team"}
    )
    assert (status, data["topic"], data["deliveries"]) == (202, "orders", 1)
    deadline = time.monotonic() + 20
    while True:  # (what fn logs shows; the delivery runs off the request)
        _, data = await running.admin(
            "GET", "/v1/functions/sink/activations", headers=bearer(invoker)
        )
        if data["activations"]:
            break
        assert time.monotonic() < deadline, "the event was not delivered"
        await asyncio.sleep(0.02)
    [activation] = data["activations"]
    assert (activation["function"], activation["namespace"]) == ("sink", "team-a")
    assert activation["status"] == "success"
