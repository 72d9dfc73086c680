"""`python -m bench.policy_digest --trace DIR`: what the policies decide on a trace, as a digest.

For every policy kind, alone (as `fn policy simulate` runs it) and through the live
`PolicyRouter` (with functions switching kind midway, and plans recomputed later than the call
that made them stale, as live), one line: calls, cold starts, starts, idle GB-s and the sha256
of every decision (function, time, keep until, prewarm at, prewarm until). Two checkouts that
print the same lines decide the same: run it before and after a change of the policy's code
that must not change a decision (`PYTHONPATH=DIR python -P -m bench.policy_digest` for another).
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from pathlib import Path

from scheduler.policy import Decision, HybridHistogram, Policy, parse_policy
from scheduler.router import FunctionPolicy, PolicyRouter
from scheduler.simulator import Result, load_azure_trace, simulate

SPECS = ["fixed:10m", "histogram", "histogram-cost", "histogram-cost:30m/5m", "adaptive"]
KINDS = ["fixed", "histogram", "histogram-cost", "adaptive"]
ROUTED = [(kind, 0, 0) for kind in KINDS] + [
    ("adaptive", 0, 7),
    ("fixed", 50, 0),
    ("adaptive", 37, 5),
]
"""(default kind, switch each function's kind every N of its calls, run deferred work every N
events): 0 for never / at once."""


class Recorder:
    """A policy that hashes every decision of the one it wraps."""

    def __init__(self, policy: Policy, *, switch_every: int = 0, defer_every: int = 0) -> None:
        self.policy = policy
        self.digest = hashlib.sha256()
        self.switch_every = switch_every
        self.defer_every = defer_every
        self.calls: dict[str, int] = {}
        self.deferred: list[Callable[[], None]] = []
        self.events = 0
        if defer_every and isinstance(policy, PolicyRouter):
            policy.defer_to(self.deferred.append)

    @property
    def name(self) -> str:
        return self.policy.name

    def _tick(self) -> None:
        self.events += 1
        if self.defer_every and self.events % self.defer_every == 0:
            jobs, self.deferred[:] = list(self.deferred), []
            for job in jobs:
                job()

    def on_arrival(self, function: str, now: float) -> None:
        if self.switch_every and isinstance(self.policy, PolicyRouter):
            calls = self.calls[function] = self.calls.get(function, 0) + 1
            if calls % self.switch_every == 0:
                kind = KINDS[(calls // self.switch_every) % len(KINDS)]
                self.policy.overrides[function] = FunctionPolicy(prewarm=kind, keep_alive_s=600)
        self.policy.on_arrival(function, now)
        self._tick()

    def on_idle(self, function: str, now: float) -> Decision:
        d = self.policy.on_idle(function, now)
        fields = (function, now, d.keep_until, d.prewarm_at, d.prewarm_until)
        self.digest.update(repr(fields).encode())
        self._tick()
        return d


def line(label: str, result: Result, recorder: Recorder) -> str:
    return (
        f"{label:<40} calls={result.calls} cold={result.cold} starts={result.starts} "
        f"idle_gb_s={result.idle_gb_s!r} {recorder.digest.hexdigest()[:16]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy_digest", description=__doc__)
    parser.add_argument("--trace", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    traces = load_azure_trace(args.trace, seed=args.seed)
    for spec in SPECS:
        policy = parse_policy(spec)
        if isinstance(policy, HybridHistogram):
            policy.memory_mb.update({t.name: t.memory_mb for t in traces})
        recorder = Recorder(policy)
        print(line(f"policy {spec}", simulate(traces, recorder), recorder), flush=True)
    for kind, switch_every, defer_every in ROUTED:
        router = PolicyRouter(FunctionPolicy(prewarm=kind, keep_alive_s=600))
        for trace in traces:
            router.note_memory(trace.name, trace.memory_mb)
        recorder = Recorder(router, switch_every=switch_every, defer_every=defer_every)
        label = f"router {kind} switch={switch_every} defer={defer_every}"
        print(line(label, simulate(traces, recorder), recorder), flush=True)


if __name__ == "__main__":
    main()
