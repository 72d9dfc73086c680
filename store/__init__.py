"""The store: Ember's only code that speaks SQL.

`Store` owns an asyncpg pool, applies the numbered migrations under an advisory lock, and offers
one method per named query in `queries.sql`. Everything it returns is a plain record.

Each area's queries live in a module of their own, as a class that `Store` inherits (one
object, so callers keep calling `store.create_version(...)` whatever module holds it):

    base.py         the pool, connections, retries, migrations, change notifications
    functions.py    functions, versions, environments, builds
    activations.py  activation records
    policies.py     policy overrides
    deliveries.py   the delivery queue, dead letters, outbox changes
    events.py       topics, events, triggers, schedules
    retention.py    pruning the tables that grow, by age and count, in batches
    gateways.py     gateway runs, heartbeats, the release of dead runs' claims
    sources.py      broker sources: their triggers and messages, one consumer per source
    access.py       namespaces, API keys (hashed), secrets (encrypted), the audit trail
"""

from __future__ import annotations

from store.access import AccessStore, ApiKey, AuditEntry, NamespaceRow, SecretInfo
from store.activations import ActivationStore
from store.deliveries import DeliveryStore
from store.errors import (
    DatabaseUnavailable,
    FunctionNotFound,
    MigrationError,
    NotFound,
    StoreError,
    TopicNotFound,
    TriggerError,
    VersionNotFound,
)
from store.events import EventStore
from store.functions import FunctionStore
from store.gateways import GatewayStore
from store.insights import CallStats, InsightStore
from store.outbox import Change
from store.policies import PolicyStore
from store.records import (
    NO_PACKAGE,
    Activation,
    ActivationId,
    Build,
    Claimed,
    Delivery,
    Environment,
    Event,
    Function,
    FunctionConfig,
    NewDelivery,
    Outcome,
    Package,
    PolicyRow,
    Topic,
    Trigger,
    Version,
    new_id,
)
from store.retention import RetentionStore
from store.sources import SourceStore

__all__ = [
    "NO_PACKAGE",
    "AccessStore",
    "Activation",
    "ActivationId",
    "ApiKey",
    "AuditEntry",
    "Build",
    "CallStats",
    "Change",
    "Claimed",
    "DatabaseUnavailable",
    "Delivery",
    "Environment",
    "Event",
    "Function",
    "FunctionConfig",
    "FunctionNotFound",
    "MigrationError",
    "NamespaceRow",
    "NewDelivery",
    "NotFound",
    "Outcome",
    "Package",
    "PolicyRow",
    "SecretInfo",
    "Store",
    "StoreError",
    "Topic",
    "TopicNotFound",
    "Trigger",
    "TriggerError",
    "Version",
    "VersionNotFound",
    "new_id",
]


class Store(
    FunctionStore,
    ActivationStore,
    PolicyStore,
    DeliveryStore,
    EventStore,
    RetentionStore,
    GatewayStore,
    InsightStore,
    SourceStore,
    AccessStore,
):
    """Named queries over an asyncpg pool. Create with `await Store.connect(url)`."""
