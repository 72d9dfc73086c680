"""Keep-alive policies: how long an idle specialized instance stays warm.

Pure objects: given the moment an instance went idle, they answer until when it is kept. The live
scheduler and (later) the trace simulator call the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class KeepAlivePolicy(Protocol):
    def keep_until(self, function: str, idle_since: float) -> float:
        """The clock time at which an instance of `function`, idle since `idle_since`, stops."""
        ...


@dataclass(slots=True, frozen=True)
class FixedKeepAlive:
    """Keep every idle instance for the same time, as OpenWhisk (10 min) and Knative do."""

    keep_alive_s: float = 600.0

    def keep_until(self, function: str, idle_since: float) -> float:
        return idle_since + self.keep_alive_s
