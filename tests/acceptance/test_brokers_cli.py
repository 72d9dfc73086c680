"""The four brokers from the `fn` command against `fn up`: `fn trigger add --nats / --rabbitmq /
--redis-stream / --mqtt`, a message published to each runs the function, `fn trigger list`
shows the URL masked and the namespace, `fn --namespace` adds a trigger to that namespace's
function, and a missing stream or an unreachable broker fails the command with the reason."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.acceptance.test_cli import fn_up
from tests.conftest import shared
from tests.integration.brokers import BROKERS

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

HANDLER = (
    "import json\n"
    "def handler(event, context):\n"
    "    with open(context.config['OUT'], 'a') as f:\n"
    "        f.write(json.dumps({'source': context.source, 'event': event,\n"
    "                            'function': context.function}) + '\\n')\n"
)
FLAGS = {"nats": "--nats", "rabbitmq": "--rabbitmq", "redis": "--redis-stream", "mqtt": "--mqtt"}


def test_every_broker_from_the_cli(tmp_path: Path) -> None:
    kinds = sorted(FLAGS)
    for kind in kinds:
        BROKERS[kind].require()
    names = {kind: BROKERS[kind].unique() for kind in kinds}
    team_stream = BROKERS["redis"].unique()  # consumed by team-a's rec
    out = shared(tmp_path) / "out.jsonl"
    team_out = shared(tmp_path) / "team-a.jsonl"  # (another function: another sandbox user)
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)

    async def create() -> None:
        for kind in kinds:
            await BROKERS[kind].create(names[kind])
        await BROKERS["redis"].create(team_stream)

    asyncio.run(create())
    try:
        with fn_up(tmp_path / "state") as cli:
            cli.ok("deploy", str(handler), "--name", "rec", "--env", f"OUT={out}")
            for kind in kinds:
                body = BROKERS[kind].trigger(names[kind])
                what = next(v for k, v in body.items() if k != "url")
                url = body["url"]
                added = cli.ok("trigger", "add", "rec", FLAGS[kind], what, "--url", url)
                assert added.startswith("Added trigger"), added
            listed = cli.ok("trigger", "list", "rec")
            assert "amqp://guest:***@127.0.0.1:5672/" in listed, listed
            assert "guest:guest" not in listed
            for kind in kinds:
                assert f"{kind}" in listed
            # The same name in team-a is another function, with a trigger of its own.
            team = ("--namespace", "team-a")
            cli.ok(*team, "deploy", str(handler), "--name", "rec", "--env", f"OUT={team_out}")
            body = BROKERS["redis"].trigger(team_stream)
            cli.ok(
                *team, "trigger", "add", "rec", "--redis-stream", team_stream, "--url", body["url"]
            )
            [theirs] = json.loads(cli.ok(*team, "trigger", "list", "rec", "--json"))["triggers"]
            assert (theirs["function"], theirs["namespace"]) == ("rec", "team-a")
            listed = cli.ok("trigger", "list")  # the admin token: every namespace's
            rows = [line.split()[:3] for line in listed.splitlines()]
            assert rows[0] == ["ID", "NAMESPACE", "FUNCTION"], listed
            assert [str(theirs["id"]), "team-a", "rec"] in rows, listed

            async def publish() -> None:
                for n, kind in enumerate(kinds):
                    await BROKERS[kind].publish(names[kind], [json.dumps({"n": n}).encode()])
                await BROKERS["redis"].publish(team_stream, [b'{"team": "a"}'])

            asyncio.run(publish())
            deadline = time.monotonic() + 30
            while len(found := _lines(out)) < len(kinds) or not _lines(team_out):
                assert time.monotonic() < deadline, found
                time.sleep(0.05)
            assert sorted(str(x["source"]) for x in found) == kinds
            assert {str(x["function"]) for x in found} == {"rec"}
            [team_a] = _lines(team_out)
            assert (team_a["function"], team_a["event"]) == ("team-a.rec", {"team": "a"})

            # A stream that does not exist, a broker that does not answer: the command fails.
            missing = cli.run("trigger", "add", "rec", "--redis-stream", "no-such-stream-here")
            assert missing.returncode != 0
            assert 'no stream "no-such-stream-here"' in missing.stderr + missing.stdout
            dead = cli.run("trigger", "add", "rec", "--nats", "x", "--url", "nats://127.0.0.1:1")
            assert dead.returncode != 0
            assert "cannot reach NATS at nats://127.0.0.1:1" in dead.stderr + dead.stdout
    finally:

        async def remove() -> None:
            for kind in kinds:
                await BROKERS[kind].remove(names[kind])
            await BROKERS["redis"].remove(team_stream)

        asyncio.run(remove())


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
