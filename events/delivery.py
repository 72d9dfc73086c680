"""Delivery workers: run async invocations and events through the normal call path.

A worker claims due deliveries from Postgres (`FOR UPDATE SKIP LOCKED`, so gateways share the
queue without double work), runs each with `execute` (the warm pool, as for a direct call; the
gateway's `run_call` runs it on the function's home gateway), and reports outcomes in batches.
A failed attempt is retried with exponential backoff and jitter until the function's
`max_attempts` or `max_event_age` is reached, then dead-lettered. Each claim is a lease, in the
name of this gateway's run: if the gateway dies mid-delivery, the delivery is claimed again
when its successor starts or a peer sees its heartbeat stop (`events/recovery.py`), at the
latest when its lease ends (at-least-once; the repeat is counted as a redelivery).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from calls.execute import CallPath, CallResult, execute, no_nul
from calls.metrics import Metrics
from events.settings import EventSettings
from events.waiting import wait_event
from invoker.protocol import RequestMeta
from store import (
    ActivationId,
    Claimed,
    DatabaseUnavailable,
    FunctionNotFound,
    Outcome,
    Store,
    Version,
    VersionNotFound,
    new_id,
)

log = logging.getLogger("ember.gateway.delivery")
RunCall = Callable[[Version, ActivationId, RequestMeta, bytes], Awaitable[CallResult]]
"""Runs one attempt of a delivery: `execute` here, or at the function's home gateway."""
MAX_RESULT_BYTES = 1 << 20
_PERMANENT_HTTP = frozenset(range(400, 500)) - {408, 425, 429}
_SECONDS = re.compile(r"[0-9]{1,9}")


def backoff_s(attempt: int, settings: EventSettings, rng: random.Random) -> float:
    """Delay before retry number `attempt` (1 = the first retry): base x 2^(attempt-1), capped,
    then "equal jitter" (between half and all of it) so retries of a burst spread out."""
    delay: float = min(settings.retry_max_s, settings.retry_base_s * 2.0 ** min(attempt - 1, 30))
    return delay * (0.5 + rng.random() / 2)


def _retry_after(result: CallResult) -> float | None:
    """A delay the handler asked for: `RetryAfter(n)`, or a `Retry-After: n` header."""
    asked = result.error.get("retry_after_s") if result.error is not None else None
    if isinstance(asked, int | float):
        return max(0.0, float(asked))
    for key, value in result.headers:
        if key.lower() == "retry-after" and _SECONDS.fullmatch(value.strip()):
            return float(value)
    return None


def decide(
    claimed: Claimed,
    version: Version,
    result: CallResult,
    *,
    now: dt.datetime,
    settings: EventSettings,
    rng: random.Random,
    activation: ActivationId | None,
) -> Outcome:
    """The outcome of one attempt: succeeded, a retry at some time, or dead (pure)."""
    config = version.config
    base: dict[str, Any] = {
        "id": claimed.id,
        "claim": claimed.claim,
        "logs": result.logs,
        "activation": activation,
        "http_status": result.http_status,
    }
    if result.status == "throttled":  # nothing ran: try again soon, the attempt not counted
        return Outcome(
            status="pending",
            uncounted=True,
            error={"type": "NoCapacity", "message": result.message},
            run_at=now + dt.timedelta(seconds=min(result.retry_after_s or 1.0, 60.0)),
            **base,
        )
    if result.status == "success" and result.http_status < 400:
        content_type = next(
            (no_nul(v) for k, v in result.headers if k.lower() == "content-type"), None
        )
        body = result.body
        if len(body) > MAX_RESULT_BYTES:
            body = body[:MAX_RESULT_BYTES]
            content_type = "application/octet-stream; truncated"
        return Outcome(status="succeeded", result=body, result_type=content_type, **base)
    error: Mapping[str, Any]
    if result.status == "success":  # the handler answered with an error status
        error = {
            "type": f"HTTP{result.http_status}",
            "message": no_nul(result.body[:1000].decode("utf-8", "replace")),
        }
    else:
        error = result.error or {"type": result.status, "message": result.message}
    permanent = error.get("retry") is False or (
        result.status in ("success", "error") and result.http_status in _PERMANENT_HTTP
    )
    if permanent:
        return Outcome(status="dead", error={**error, "dead_because": "permanent error"}, **base)
    if claimed.attempt >= config.max_attempts:
        return Outcome(
            status="dead",
            error={
                **error,
                "dead_because": f"failed {claimed.attempt} attempts "
                f"(max_attempts {config.max_attempts})",
            },
            **base,
        )
    delay = _retry_after(result)
    if delay is None:
        delay = backoff_s(claimed.attempt, settings, rng)
    run_at = now + dt.timedelta(seconds=min(delay, config.max_event_age_s + 1))
    if (run_at - claimed.created_at).total_seconds() > config.max_event_age_s:
        return Outcome(
            status="dead",
            error={
                **error,
                "dead_because": f"a retry would be older than max_event_age "
                f"({config.max_event_age_s:g}s)",
            },
            **base,
        )
    return Outcome(status="pending", run_at=run_at, error=error, **base)


class OutcomeWriter:
    """Outcomes written in batches (one UPDATE per batch). If the gateway dies before a batch
    is written, those deliveries are redelivered when their lease ends: at-least-once."""

    def __init__(
        self,
        store: Store,
        *,
        delay_s: float = 0.002,
        max_batch: int = 500,
        retry_s: float = 1.0,
    ) -> None:
        self._store = store
        self._pending: list[Outcome] = []
        self._has_pending = asyncio.Event()
        self._lock = asyncio.Lock()
        self.delay_s = delay_s
        self.max_batch = max_batch
        self.retry_s = retry_s

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._has_pending.set()

    async def run(self) -> None:
        while True:
            await self._has_pending.wait()
            await asyncio.sleep(self.delay_s)  # let a batch gather
            try:
                await self.flush()
            except DatabaseUnavailable as exc:
                log.warning("cannot record delivery outcomes, retrying: %s", exc)
                await asyncio.sleep(self.retry_s)

    async def flush(self) -> None:
        """Write what is pending. DatabaseUnavailable leaves it pending; any other failure
        (one outcome the database refuses) is isolated: see `_write_one_by_one`."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self.max_batch]
                try:
                    await self._store.finish(batch)
                except DatabaseUnavailable:
                    raise
                except Exception:
                    log.exception(
                        "a batch of delivery outcomes was refused; writing them one by one"
                    )
                    await self._write_one_by_one(batch)
                del self._pending[: len(batch)]
            self._has_pending.clear()

    async def _write_one_by_one(self, batch: list[Outcome]) -> None:
        for outcome in batch:
            try:
                await self._store.finish([outcome])
                continue
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                refused = exc
            # Keep the decision, drop what the database refused (result, logs, error text).
            bare = dataclasses.replace(
                outcome,
                result=None,
                result_type=None,
                logs="",
                error={
                    "type": "UnrecordableOutcome",
                    "message": f"the outcome could not be stored: {type(refused).__name__}",
                },
            )
            try:
                await self._store.finish([bare])
            except DatabaseUnavailable:
                raise
            except Exception:  # its lease runs out and it is delivered again
                log.exception(
                    "could not record a delivery outcome", extra={"delivery": str(outcome.id)}
                )


class DeliveryWorker:
    """Claims due deliveries and runs them, at most `settings.concurrency` at a time."""

    def __init__(
        self,
        store: Store,
        calls: CallPath,
        settings: EventSettings,
        *,
        gateway: uuid.UUID | None = None,
        run_call: RunCall | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._calls = calls
        self._run_call = run_call or functools.partial(execute, calls)
        self.settings = settings
        self.outcomes = OutcomeWriter(store)
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        # By (delivery, claim): a delivery whose lease ran out may be claimed again here.
        self._inflight: dict[tuple[ActivationId, int], asyncio.Task[None]] = {}
        self._rng = random.Random()
        self._stopping = False

    def wake(self) -> None:
        """New work may be due (a NOTIFY on `ember_deliveries`)."""
        self._wake.set()

    @property
    def saturated(self) -> bool:
        """Busy with as many deliveries as it may run: new work is better left to others."""
        return len(self._inflight) >= self.settings.concurrency

    async def run(self) -> None:
        """Claim and start deliveries until `stop`; a claim in progress is completed first, so
        nothing claimed is left without a task."""
        store = self._store
        while not self._stopping:
            free = self.settings.concurrency - len(self._inflight)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wake.clear()
            try:
                claimed = await store.claim(
                    free, self.settings.lease_margin_s, gateway=self._gateway
                )
            except Exception as exc:  # DatabaseUnavailable, or a query the server refused
                log.warning("cannot claim deliveries, retrying: %r", exc)
                await self._sleep(self.settings.poll_s)
                continue
            for item in claimed:
                key = (item.id, item.claim)
                task = asyncio.create_task(self._deliver(item), name=f"delivery {item.id}")
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._done, key))
            if len(claimed) == free:
                continue
            timeout = self.settings.poll_s
            if not self._wake.is_set():
                try:
                    due = await store.next_delivery_due_s()
                except Exception:
                    due = None
                if due is not None:
                    timeout = min(timeout, max(due, 0.001))
                await self._sleep(timeout)

    async def _sleep(self, timeout_s: float) -> None:
        """Until woken (new work, or stop) or `timeout_s`."""
        await wait_event(self._wake, timeout_s)

    def _done(self, key: tuple[ActivationId, int], _task: asyncio.Task[None]) -> None:
        self._inflight.pop(key, None)
        self._slot_free.set()

    async def _deliver(self, claimed: Claimed) -> None:
        metrics = self._calls.metrics
        wait_s = (dt.datetime.now(dt.UTC) - claimed.created_at).total_seconds()
        if claimed.attempt == 1:
            metrics.delivery_wait.labels(claimed.source).observe(max(wait_s, 0.0))
        if claimed.redelivered:
            metrics.redeliveries.labels(claimed.function).inc()
            log.warning(
                "redelivering: the claim of a dead gateway or an expired lease",
                extra={"function": claimed.function, "delivery": str(claimed.id)},
            )
        try:
            version = await self._calls.functions.resolve(claimed.function, claimed.version)
        except (FunctionNotFound, VersionNotFound) as exc:
            self._finish(
                claimed,
                Outcome(
                    id=claimed.id,
                    claim=claimed.claim,
                    status="dead",
                    error={
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "dead_because": "the function or version no longer exists",
                    },
                ),
            )
            return
        except DatabaseUnavailable:
            return  # the lease runs out and the delivery is taken again
        age_s = (dt.datetime.now(dt.UTC) - claimed.created_at).total_seconds()
        if age_s > version.config.max_event_age_s:
            self._finish(
                claimed,
                Outcome(
                    id=claimed.id,
                    claim=claimed.claim,
                    status="dead",
                    error={
                        "type": "Expired",
                        "message": f"{age_s:.0f}s old",
                        "dead_because": f"older than max_event_age "
                        f"({version.config.max_event_age_s:g}s)",
                    },
                ),
            )
            return
        activation = new_id()
        t0 = time.perf_counter()
        try:
            meta = cast(RequestMeta, dict(claimed.meta))  # as the gateway stored it
            # A stable id across attempts, so a handler can skip a repeat it already did.
            meta["headers"] = [
                *meta.get("headers", ()),
                ("X-Ember-Delivery-Id", str(claimed.id)),
                ("X-Ember-Attempt", str(claimed.attempt)),
            ]
            # What a handler style needs to build its platform's event (invoker.styles).
            meta["source"] = "schedule" if claimed.source == "cron" else claimed.source
            meta["event_id"] = str(claimed.id)
            meta["event_time"] = claimed.created_at.isoformat()
            topic = next((v for k, v in meta["headers"] if k == "X-Ember-Topic"), None)
            if topic is not None:
                meta["topic"] = topic
            result = await self._run_call(version, activation, meta, claimed.payload)
        except Exception:  # a bug: the lease runs out and the delivery is taken again
            log.exception("delivery failed", extra={"delivery": str(claimed.id)})
            return
        try:
            outcome = decide(
                claimed,
                version,
                result,
                now=dt.datetime.now(dt.UTC),
                settings=self.settings,
                rng=self._rng,
                activation=activation,
            )
        except Exception:  # a bug: retry it as a plain failure rather than lose the outcome
            log.exception(
                "could not decide a delivery's outcome", extra={"delivery": str(claimed.id)}
            )
            outcome = Outcome(
                id=claimed.id,
                claim=claimed.claim,
                status="pending",
                run_at=dt.datetime.now(dt.UTC)
                + dt.timedelta(seconds=backoff_s(claimed.attempt, self.settings, self._rng)),
                error={"type": "InternalError", "message": "see the gateway's log"},
            )
        if outcome.status == "succeeded":
            metrics.delivery_latency.labels(claimed.source).observe(
                wait_s + time.perf_counter() - t0
            )
        self._finish(claimed, outcome)

    def _finish(self, claimed: Claimed, outcome: Outcome) -> None:
        kind = "retry" if outcome.status == "pending" else outcome.status
        if outcome.uncounted:
            kind = "throttled"
        self._calls.metrics.deliveries.labels(claimed.function, kind).inc()
        if outcome.status == "dead":
            self._calls.metrics.dead_letters.labels(claimed.function).inc()
            log.warning(
                "dead-lettered",
                extra={
                    "function": claimed.function,
                    "delivery": str(claimed.id),
                    "error": dict(outcome.error or {}),
                },
            )
        self.outcomes.add(outcome)

    def stop_claiming(self) -> None:
        """Make `run` return after the claim in progress (if any) has started its tasks."""
        self._stopping = True
        self._wake.set()
        self._slot_free.set()

    async def stop(self, grace_s: float) -> None:
        """Let in-flight deliveries finish for up to `grace_s`, record their outcomes, and give
        the rest back to the queue (due at once, the attempt not counted). Call after `run`
        has returned (see `stop_claiming`)."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        unfinished = list(self._inflight)
        for task in self._inflight.values():
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        try:
            await self.outcomes.flush()
            if unfinished:
                await self._store.release(unfinished)
        except Exception as exc:
            log.warning(
                "could not record the last delivery outcomes (they will be "
                "redelivered when their leases end): %r",
                exc,
            )


async def housekeeping(store: Store, metrics: Metrics, *, sample_s: float = 5.0) -> None:
    """Sample the queue depth for `/metrics` (retention prunes finished deliveries:
    gateway/retention.py)."""
    while True:
        try:
            metrics.queue_depth = await store.delivery_depth()
        except Exception as exc:  # DatabaseUnavailable, or a query the server refused
            log.warning("sampling the delivery queue failed, retrying: %r", exc)
        await asyncio.sleep(sample_s)
