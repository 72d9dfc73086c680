"""The fake Kubernetes API of tests/k8s, started per test with the scheduler's Role in force."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.k8s.apimachinery import SCHEDULER_RULES
from tests.k8s.fakeapi import FakeKubernetes, assert_stopped

NS = "ember-functions"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    """The API server, with the ConfigMap that owns invoker pods (deploy/ creates it)."""
    api = FakeKubernetes(rules=SCHEDULER_RULES)
    await api.start()
    api.put(
        "configmaps",
        NS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ember-invokers"}},
    )
    yield api
    await api.stop()
    assert_stopped(api)
