"""A realistic mix for longer runs against a running platform (see bench/README.md).

Several functions, mostly warm sync calls, some calls to rarely used functions that have
scaled to zero (cold), a few pinned versions. Deploys its functions once at start.

    locust -f bench/locustfile.py --headless -u 64 -r 16 -t 2m --host http://127.0.0.1:8080
"""

from __future__ import annotations

import os
import random
from typing import Any

import orjson
from locust import HttpUser, between, events, task

from fn.client import Client

HOT = ["echo", "resize", "score"]
RARE = [f"rare-{i}" for i in range(20)]
SOURCE = "def handler(event, context):\n    return {'ok': True, 'n': len(event)}\n"


@events.test_start.add_listener
def deploy_functions(environment: Any, **_: Any) -> None:
    client = Client(url=environment.host, token=os.environ.get("FN_TOKEN"))
    for name in HOT + RARE:
        client.api("POST", "/v1/functions", {"name": name, "source": SOURCE})


class Caller(HttpUser):
    wait_time = between(0.0, 0.01)
    body = orjson.dumps({"data": "x" * 1000})

    def _call(self, name: str) -> None:
        self.client.post(
            f"/fn/{name}",
            data=self.body,
            name=f"/fn/{name.split('-')[0]}",
            headers={"Content-Type": "application/json"},
        )

    @task(20)
    def hot(self) -> None:
        self._call(random.choice(HOT))

    @task(1)
    def rare(self) -> None:
        self._call(random.choice(RARE))

    @task(1)
    def pinned(self) -> None:
        self._call("echo:1")
