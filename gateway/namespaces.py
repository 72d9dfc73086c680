"""Names in namespaces. A function (or a secret's user) of namespace `team-a` is stored as
`team-a.NAME` (a function name cannot hold a dot), one of `default` as plain `NAME`: whatever
is keyed by function name (versions, policies, triggers, activations) is per namespace, and
what was deployed before namespaces existed is in `default`, unchanged."""

from __future__ import annotations

import re

DEFAULT_NAMESPACE = "default"
NAMESPACE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def qualify(namespace: str, name: str) -> str:
    """The stored name of function `name` of `namespace`."""
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}.{name}"


def split_name(stored: str) -> tuple[str, str]:
    """(namespace, name) of a stored function name."""
    namespace, dot, name = stored.partition(".")
    return (namespace, name) if dot else (DEFAULT_NAMESPACE, stored)


def shown_name(stored: str) -> str:
    """How messages name a function: `NAME`, or `NAMESPACE/NAME` (as it is called)."""
    namespace, name = split_name(stored)
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


def qualify_topic(namespace: str, topic: str) -> str:
    """The stored name of `topic` of `namespace`: `team-a/orders.created` (a topic name holds
    no slash), or the plain name in `default`."""
    return topic if namespace == DEFAULT_NAMESPACE else f"{namespace}/{topic}"


def split_topic(stored: str) -> tuple[str, str]:
    """(namespace, topic) of a stored topic name."""
    namespace, slash, topic = stored.partition("/")
    return (namespace, topic) if slash else (DEFAULT_NAMESPACE, stored)
