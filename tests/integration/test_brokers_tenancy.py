"""Broker triggers among teams (issues 18 and 21): a broker trigger lives in its function's
namespace like any trigger (added, listed, deleted within it, and audited), its messages run
that namespace's function. (Its URL sealed with the platform's secrets key:
test_brokers.py.) Real Postgres, a real Redis."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import Running, shared
from tests.integration.brokers import BROKERS
from tests.integration.test_tenancy_auth import bearer, create_key

pytestmark = pytest.mark.timeout(90)

RECORDER = textwrap.dedent("""
    import json

    def handler(event, context):
        with open(context.config["OUT"], "a") as f:
            f.write(json.dumps({"event": event, "function": context.function}) + "\\n")
""")


async def test_a_broker_trigger_lives_in_its_namespace(running: Running, tmp_path: Path) -> None:
    redis = BROKERS["redis"]
    redis.require()
    stream = redis.unique()
    await redis.create(stream)
    out = shared(tmp_path) / "out.jsonl"
    try:
        team_a = await create_key(running, "deployer", namespace="team-a")
        team_b = await create_key(running, "deployer", namespace="team-b")
        for key in (team_a, team_b):  # the same name in two namespaces
            status, data = await running.admin(
                "POST",
                "/v1/functions",
                headers=bearer(key),
                json={"name": "rec", "source": RECORDER, "env": {"OUT": str(out)}},
            )
            assert status == 201, data
        body = redis.trigger(stream)
        # A key of team-a cannot add a trigger in team-b, even by naming it.
        status, data = await running.admin(
            "POST", "/v1/functions/rec/triggers", headers=bearer(team_a, "team-b"), json=body
        )
        assert status == 403, data
        # Its own function's: stored as team-a's, listed with the namespace.
        status, trigger = await running.admin(
            "POST", "/v1/functions/rec/triggers", headers=bearer(team_a), json=body
        )
        assert status == 201, trigger
        assert (trigger["function"], trigger["namespace"], trigger["kind"]) == (
            "rec",
            "team-a",
            "redis",
        )
        [stored] = await running.platform.store.list_source_triggers()
        assert stored.function == "team-a.rec"
        _, listed = await running.admin("GET", "/v1/triggers", headers=bearer(team_b))
        assert listed["triggers"] == []
        _, listed = await running.admin("GET", "/v1/triggers")  # the admin sees every one
        assert [(t["id"], t["namespace"]) for t in listed["triggers"]] == [
            (trigger["id"], "team-a")
        ]
        status, _ = await running.admin(
            "DELETE", f"/v1/triggers/{trigger['id']}", headers=bearer(team_b)
        )
        assert status == 404  # another namespace's trigger: as if there were none

        # Its messages run team-a's function, not team-b's of the same name.
        await redis.publish(stream, [json.dumps({"n": i}).encode() for i in range(5)])
        deadline = time.monotonic() + 30
        while len(found := _lines(out)) < 5:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)
        assert {x["function"] for x in found} == {"team-a.rec"}  # (the handler's own name)
        _, data = await running.admin(
            "GET", "/v1/functions/rec/activations", headers=bearer(team_b)
        )
        assert data["activations"] == []
        _, data = await running.admin(
            "GET", "/v1/functions/rec/activations", headers=bearer(team_a)
        )
        assert {(a["namespace"], a["status"]) for a in data["activations"]} == {
            ("team-a", "success")
        }

        status, _ = await running.admin(
            "DELETE", f"/v1/triggers/{trigger['id']}", headers=bearer(team_a)
        )
        assert status == 200
        # Both actions are in team-a's audit trail, with their actor.
        _, data = await running.admin("GET", "/v1/audit", headers=bearer(team_a))
        actions = [(e["action"], e["path"], e["status"]) for e in data["audit"]]
        assert actions[:2] == [
            ("DELETE /v1/triggers/{id}", f"/v1/triggers/{trigger['id']}", 200),
            ("POST /v1/functions/{name}/triggers", "/v1/functions/rec/triggers", 201),
        ]
        actor = f"key:{team_a.split('_')[1]}"
        assert {e["actor"] for e in data["audit"][:2]} == {actor}
        assert "guest" not in json.dumps(data)
        assert stream not in json.dumps(data["audit"])
    finally:
        await redis.remove(stream)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
