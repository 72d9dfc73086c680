"""Change notifications between gateways: what NOTIFY on the `ember_functions` channel carries.

Each payload is a JSON object with a `kind`:

- `{"kind": "function", "function": "resize", "version": 3}`: deployed, rolled back (the active
  version now) or deleted (`version` 0);
- `{"kind": "policy", "function": "resize"}`: its warm-pool policy (or the default's) changed;
- `{"kind": "triggers", "trigger_kind": "schedule"}`: triggers of that kind changed.

`parse_change` also reads the text payloads of earlier Ember releases (`resize:3`,
`policy:resize`, `triggers:schedule`), so gateways of both can run side by side during an upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(slots=True, frozen=True)
class FunctionChanged:
    function: str
    version: int
    """The active version now; 0: the function was deleted."""


@dataclass(slots=True, frozen=True)
class PolicyChanged:
    function: str


@dataclass(slots=True, frozen=True)
class TriggersChanged:
    trigger_kind: str


Change = FunctionChanged | PolicyChanged | TriggersChanged


def parse_change(payload: str) -> Change:
    """The change a payload announces; ValueError if it is not one."""
    if payload.startswith("{"):
        try:
            data = orjson.loads(payload)
            kind = data["kind"]
            if kind == "function":
                return FunctionChanged(str(data["function"]), int(data["version"]))
            if kind == "policy":
                return PolicyChanged(str(data["function"]))
            if kind == "triggers":
                return TriggersChanged(str(data["trigger_kind"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a change notification: {payload[:200]!r}") from exc
        raise ValueError(f"unknown change kind {kind!r}")
    # Before JSON payloads: "policy:name", "triggers:kind", "name:version".
    head, _, tail = payload.partition(":")
    if head == "policy":
        return PolicyChanged(tail)
    if head == "triggers":
        return TriggersChanged(tail)
    name, _, version = payload.rpartition(":")
    try:
        return FunctionChanged(name, int(version or 0))
    except ValueError:
        raise ValueError(f"not a change notification: {payload[:200]!r}") from None
