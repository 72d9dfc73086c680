"""Tenancy on the Kubernetes backend (issue 18): a private function of a namespace, reading a
secret, runs in an invoker pod that gets the secret's values at specialization, and none of it
is in the pod's spec or labels. Against tests/k8s/fakeapi, with the real scheduler process."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from cryptography.fernet import Fernet

from scheduler.backends.kubernetes import FUNCTION_LABEL, STATE_LABEL, label_value
from scheduler.backends.remote import RemoteBackend
from tests.conftest import PlatformFactory
from tests.integration.test_tenancy_auth import bearer, create_key
from tests.k8s.fakeapi import FakeKubernetes
from tests.k8s.test_platform import SCHEDULER_TOKEN, SchedulerFactory, pods, start_scheduler

__all__ = ["start_scheduler"]  # (the fixture, used here)

VALUE = "k8s-secret-value-9c1e"
READS = (
    "import hashlib, os\n"
    "def handler(event, context):\n"
    "    return hashlib.sha256(os.environ['TOKEN'].encode()).hexdigest()\n"
)


async def test_a_private_function_with_a_secret_in_a_pod(
    fake: FakeKubernetes,
    start_scheduler: SchedulerFactory,
    make_platform: PlatformFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As deploy/ gives it: the key from secret/ember-secrets, the same on every replica.
    monkeypatch.setenv("EMBER_SECRETS_KEY", Fernet.generate_key().decode())
    async with start_scheduler() as scheduler:
        await scheduler.wait_health("leader")
        async with make_platform(
            backend="kubernetes",
            scheduler_token=SCHEDULER_TOKEN,
            gateway_id="gw-t",
            pool={"generic_pool_size": 0},
        ) as r:
            backend = r.platform.scheduler.backend
            assert isinstance(backend, RemoteBackend)
            await asyncio.wait_for(backend.connected.wait(), 10)
            team = {"X-Ember-Namespace": "team-a"}
            status, data = await r.admin(
                "PUT", "/v1/secrets/api", headers=team, json={"values": {"TOKEN": VALUE}}
            )
            assert status == 200, data
            status, data = await r.admin(
                "POST",
                "/v1/functions",
                headers=team,
                json={
                    "name": "svc",
                    "source": READS,
                    "filename": "handler.py",
                    "auth": "key",
                    "secrets": ["api"],
                },
            )
            assert status == 201, data
            assert (await r.call("team-a/svc", {})).status == 401
            key = await create_key(r, "invoker", namespace="team-a")
            response = await r.call("team-a/svc", {}, headers=bearer(key))
            assert response.status == 200, await response.text()
            assert await response.text() == hashlib.sha256(VALUE.encode()).hexdigest()

            [pod] = pods(
                fake, **{STATE_LABEL: "specialized", FUNCTION_LABEL: label_value("team-a.svc")}
            )
            assert VALUE not in json.dumps(pod)
