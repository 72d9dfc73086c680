"""Change notifications between gateways: what NOTIFY on the `ember_changes` channel carries.

Each payload is a JSON object with a `kind`:

- `{"kind": "function", "function": "resize", "version": 3}`: deployed, rolled back (the active
  version now) or deleted (`version` 0);
- `{"kind": "policy", "function": "resize"}`: its warm-pool policy (or the default's) changed;
- `{"kind": "triggers", "trigger_kind": "schedule"}`: triggers of that kind changed;
- `{"kind": "access"}`: API keys or namespaces changed (created, revoked): reload them;
- `{"kind": "secret", "functions": ["resize"]}`: a secret these functions read was rotated:
  their warm instances are rolled (JSON only: gateways of earlier releases skip both);
- `{"kind": "trust"}`: an environment was trusted or untrusted (`fn env trust`): reload the
  list (JSON only, too).

Gateways of earlier releases listen on `ember_functions` for text payloads (`resize:3`,
`policy:resize`, `triggers:schedule`), so every change is also sent there, in the same
transaction, until the next release: during a rolling upgrade old and new gateways see each
other's changes. A new gateway listens on both channels; `ChangeFeed` passes each change on once
(the text twin that follows a JSON payload from the same sender is skipped).
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


@dataclass(slots=True, frozen=True)
class AccessChanged:
    pass


@dataclass(slots=True, frozen=True)
class SecretRotated:
    functions: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class TrustChanged:
    pass


Change = (
    FunctionChanged | PolicyChanged | TriggersChanged | AccessChanged | SecretRotated | TrustChanged
)


class ChangeFeed:
    """Parses the payloads of both channels, in the order they arrive, into changes."""

    def __init__(self) -> None:
        self._last: tuple[int, Change] | None = None

    def feed(self, sender_pid: int, payload: str) -> Change | None:
        """The change to act on, or None: a twin of the one just passed on, from the same
        sender (ValueError: no change). Skipping is safe: a change says what the state is now,
        so the same one twice in a row is no news."""
        change = parse_change(payload)
        if isinstance(change, AccessChanged | SecretRotated | TrustChanged):
            return change  # sent once (no text twin): the same one again is news
        if self._last == (sender_pid, change):
            self._last = None
            return None
        self._last = (sender_pid, change)
        return change


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
            if kind == "access":
                return AccessChanged()
            if kind == "secret":
                return SecretRotated(tuple(str(f) for f in data["functions"]))
            if kind == "trust":
                return TrustChanged()
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
