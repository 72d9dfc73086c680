"""This gateway's run in the store, its heartbeat, and taking over the claims of dead runs.

A claim names the run that made it (`GatewayRun.id`, new at each start). At start the run is
registered and the claims of earlier runs on the same state dir are released at once (this
process holds the state dir's lock, so they are dead: a restart after SIGKILL retries their
deliveries within seconds, not after their leases). While running, each gateway beats every
`heartbeat_s` and releases the claims of any run silent for `gateway_dead_after_s`: a peer on
another host, or one whose state dir is gone.

A run taken for dead that is only slow loses nothing but its exclusivity: the outcome of its
attempt is still recorded if nobody has claimed the delivery again (the claim count matches),
and ignored otherwise, as for an expired lease. A gateway that has itself been cut off from the
database (a restart) waits a whole `gateway_dead_after_s` of beats before it judges others,
since their beats failed too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from events.settings import EventSettings
from store import Store

log = logging.getLogger("ember.gateway.recovery")


@dataclass(slots=True, frozen=True, kw_only=True)
class GatewayRun:
    """This process's run of a gateway."""

    name: str
    """The gateway's name (EMBER_GATEWAY_ID)."""
    home: str
    """Host and state dir: at most one live run per home (the state dir's lock)."""
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    pid: int = field(default_factory=os.getpid)


async def register(store: Store, run: GatewayRun) -> None:
    """Register `run`; earlier runs on its home are dead: their claims are due again now."""
    released = await store.register_gateway(run.id, name=run.name, home=run.home, pid=run.pid)
    if released:
        log.warning(
            "released the deliveries a previous run on this state dir had claimed",
            extra={"deliveries": len(released)},
        )


async def heartbeat(
    store: Store, run: GatewayRun, settings: EventSettings, on_released: Callable[[], object]
) -> None:
    """Beat every `heartbeat_s`; release the claims of runs silent past `gateway_dead_after_s`
    (then call `on_released`: those deliveries are due)."""
    loop = asyncio.get_running_loop()
    beating_since: float | None = None
    while True:
        try:
            if not await store.heartbeat_gateway(run.id):
                log.warning("this gateway was taken for dead (no heartbeat); registering again")
                await store.register_gateway(run.id, name=run.name, home=run.home, pid=run.pid)
            now = loop.time()
            beating_since = now if beating_since is None else beating_since
            if now - beating_since >= settings.gateway_dead_after_s:
                released = await store.release_dead_gateways(run.id, settings.gateway_dead_after_s)
                if released:
                    log.warning(
                        "released the deliveries of a gateway that stopped beating",
                        extra={"deliveries": len(released)},
                    )
                    on_released()
        except Exception as exc:  # DatabaseUnavailable, or a query the server refused
            beating_since = None
            log.warning("gateway heartbeat failed, retrying: %r", exc)
        await asyncio.sleep(settings.heartbeat_s)


async def deregister(store: Store, run: GatewayRun) -> None:
    """A clean stop: forget the run (its unfinished claims were given back already)."""
    try:
        await store.deregister_gateway(run.id)
    except Exception as exc:
        log.warning("could not deregister this gateway: %r", exc)
