"""Which gateway is home to a function, and sending a call there (docs/kubernetes.md, "Scaling
gateways").

Each function has one home among the live gateways that advertise an address (`ember_gateways`
rows with a recent heartbeat): the one with the highest hash of (run id, function name), that
is rendezvous hashing. Every gateway computes the same home from the same list, and when a
gateway joins or leaves only the functions it gains or loses move. A call that lands on another
gateway is sent to the home in one hop (marked with `X-Ember-Hop`, so the home serves it
whatever its own view of the membership), and the home's warm instances and policy serve every
call of the function: one gateway's cold starts and idle instances, however many replicas.

On the call path this is one dict lookup (`Router.home_of`); the list of homes is read from
Postgres every `refresh_s`, off the path. A home that does not take the connection (it died)
is taken out of this gateway's list at once and the call goes to the next home, this gateway
included: nothing had reached the dead one, so nothing is lost or run twice. A home that dies
during a call loses that call: the caller gets a 502 `home_gateway_lost` that says so.
Asynchronous calls (`Prefer: respond-async`) are not sent: they go to the durable queue, and
the worker that claims one hands it to the home (gateway/handoff.py). `is_home` tells the
scheduler which functions it keeps instances of; after every read of the list the platform
lets go of the others (`Scheduler.let_go`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from yarl import URL

from gateway.errors import error_response
from gateway.peers import NotReached, PeerClient, PeerError, PeerResponse
from gateway.settings import RoutingSettings
from store import Store
from store.gateways import GatewayHome

log = logging.getLogger("ember.gateway.routing")

HOP_HEADER = "X-Ember-Hop"
"""On a call one gateway sends to another: the sender's name. The receiver serves the call."""
HOP_PROOF_HEADER = "X-Ember-Hop-Proof"
"""Beside `HOP_HEADER`: that a peer sent it (`hop_proof`); the handler never sees it."""
HOME_HEADER = "X-Ember-Home"
"""On the response to a sent call: the name of the gateway that served it."""

# Not passed on: hop-by-hop headers, what aiohttp sets itself, and (the body was decoded on the
# way in) its encoding. The handler at the home sees the rest, as the first gateway got it.
_NOT_SENT = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "expect",
        HOP_HEADER.lower(),
        HOP_PROOF_HEADER.lower(),
    }
)
_NOT_RETURNED = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "date",
        "server",
    }
)
_MAX_HOPS = 8
"""An X-Ember-Hop with a wrong proof naming this many gateways is refused: a peer with another
FN_TOKEN sends calls on and on (each hop appends its name, so a loop is seen at once)."""
_MAX_CACHED_NAMES = 65_536  # names are checked, but any number of them can be asked for


@dataclass(slots=True, frozen=True, kw_only=True)
class Home:
    """A gateway that may be home to functions, as this gateway sees it."""

    id: uuid.UUID
    name: str
    address: str
    peer: tuple[str, int] = ("", 0)
    """Host and port of `address`."""

    def score(self, function: str) -> int:
        digest = hashlib.blake2b(function.encode(), digest_size=8, key=self.id.bytes).digest()
        return int.from_bytes(digest, "big")


def hop_proof(token: str) -> str:
    """What a peer puts in `HOP_PROOF_HEADER`: derived from the admin token peers share, so a
    client cannot forge a hop (and the token itself never travels with a call)."""
    return hmac.new(token.encode(), b"ember gateway hop", hashlib.sha256).hexdigest()


def _host_port(address: str) -> tuple[str, int] | None:
    url = URL(address)
    if url.scheme != "http" or not url.host or url.port is None:
        log.warning("ignoring a gateway address that is not http://HOST:PORT: %r", address)
        return None
    return url.host, url.port


def home_among(homes: list[Home], function: str) -> Home | None:
    """The home of `function` among `homes` (rendezvous hashing), None when there are none."""
    return max(homes, key=lambda h: h.score(function), default=None)


class Router:
    """This gateway's view of the homes, and the one-hop send of a call to its home."""

    def __init__(
        self,
        store: Store,
        *,
        run_id: uuid.UUID,
        name: str,
        settings: RoutingSettings,
        silent_s: float,
        token: str,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._proof = hop_proof(token)
        self._proof_bytes = self._proof.encode()
        self.run_id = run_id
        self.name = name
        self.settings = settings
        self.silent_s = silent_s
        """A home whose heartbeat is older than this is dead (FN_GATEWAY_DEAD_AFTER)."""
        self.address: str | None = None
        """Where this gateway takes calls from peers, once it advertised."""
        self.homes: list[Home] = []
        """The live homes, suspects left out, this gateway included once it advertised."""
        self._listed: list[GatewayHome] = []
        self._suspects: dict[uuid.UUID, float] = {}
        """Homes that refused a connection, until when they are left out: then a connection
        is tried off the call path, and they are back only if it is taken."""
        self._probes: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._home_of: dict[str, Home | None] = {}
        self._alone = True
        self._clock = clock
        self._peers = PeerClient(connect_timeout_s=settings.connect_timeout_s)
        self.changed = asyncio.Event()
        """Set (and replaced) whenever the list of homes changes: tests and benches await it."""
        self.listeners: list[Callable[[bool], None]] = []
        """Called after every read of the list (and when a home is left out), with whether
        the homes changed: the platform lets go of the functions that moved away."""
        sent = Counter(
            "ember_gateway_sent_calls",
            "Calls sent to the function's home gateway, by outcome: served there, served here "
            "(the home did not take the connection), lost (the home went away during the call)",
            ["outcome"],
            registry=registry,
        )
        self._served, self._fallback, self._lost = (
            sent.labels(o) for o in ("served", "fallback", "lost")
        )
        self._forged = Counter(
            "ember_gateway_unproven_hops",
            "Calls with an X-Ember-Hop header but not the peers' proof (a client's, or a peer's "
            "with another FN_TOKEN): routed as any call, not served where they arrive",
            registry=registry,
        )
        self._homes_gauge = Gauge(
            "ember_gateway_homes", "Live gateways that are home to functions", registry=registry
        )

    # -- the call path ---------------------------------------------------------------------

    def home_of(self, function: str, request: web.Request) -> Home | None:
        """The gateway to send this call to, or None to serve it here (this gateway is the
        home, the call was sent here by a peer, or it is asynchronous)."""
        if self._alone:
            return None
        hop = request.headers.get(HOP_HEADER)
        if hop is not None and hmac.compare_digest(  # (bytes: a header may be any bytes)
            request.headers.get(HOP_PROOF_HEADER, "").encode("utf-8", "surrogateescape"),
            self._proof_bytes,
        ):
            return None
        try:
            home = self._home_of[function]
        except KeyError:
            home = self._home(function)
        if home is None or "respond-async" in request.headers.get("Prefer", ""):
            return None
        if hop is not None:  # a client's (or a peer's with another FN_TOKEN): not a hop
            self._forged.inc()
        return home

    def home_for(self, function: str) -> Home | None:
        """The gateway that runs `function`'s calls, None for this one (or no other)."""
        if self._alone:
            return None
        try:
            return self._home_of[function]
        except KeyError:
            return self._home(function)

    def is_home(self, function: str) -> bool:
        """Whether `function`'s instances belong here: this gateway is its home, or does not
        take part (routing off, alone, not advertised yet or stopping: nothing moves)."""
        return self.address is None or self.home_for(function) is None

    def keeps_ahead(self, function: str) -> bool:
        """Whether this gateway keeps `function`'s instances ahead of its calls (`min_warm`,
        prewarms): it is the home, or routing does not apply (off, alone). Not before it
        advertised nor while it stops, when it is home to nothing: a new replica would
        otherwise start the `min_warm` of every function of the cluster, then stop most."""
        return self._alone or (self.address is not None and self.home_for(function) is None)

    def next_home(self, home: Home, function: str, exc: BaseException) -> Home | None:
        """`home` did not take the connection: leave it out, and the home to try next."""
        self._suspect(home, exc)
        return self._home(function)

    async def request(self, home: Home, message: bytes) -> PeerResponse:
        """Send a whole HTTP/1.1 request to `home` (gateway/peers.py's errors)."""
        return await self._peers.request(home.peer, message)

    async def send(self, home: Home, function: str, request: web.Request) -> web.Response | None:
        """Send the call to `home` and return its response; None when no other gateway took
        it (serve it here). A home that refuses the connection is left out and the next one
        is tried."""
        via = request.headers.get(HOP_HEADER)  # (not a peer's proven hop: that is served)
        if via is not None and HOP_PROOF_HEADER in request.headers:
            # A peer's with another FN_TOKEN (a peer always sends its proof): a loop if it names
            # this gateway. Without a proof it is a client's, or one a handler passed on from
            # the headers it was called with (it sees X-Ember-Hop): routed as any call.
            gone_through = [n.strip() for n in via.split(",")]
            if self.name in gone_through or len(gone_through) >= _MAX_HOPS:
                log.warning(
                    "a call came back to this gateway: the peers do not take each other's "
                    "hop proof (FN_TOKEN differs)",
                    extra={"function": function, "hops": via[:200]},
                )
                return error_response(
                    508,
                    "hop_loop",
                    f'the call to function "{function}" came back to gateway {self.name!r} '
                    f"(through {via[:200]!r}): the gateways do not take each other's hop proof "
                    "(they must share FN_TOKEN), or the call's X-Ember-Hop header is forged",
                )
        body = await request.read()  # the limit is checked here; the home checks it too
        head = [f"{request.method} {request.raw_path} HTTP/1.1"]
        for key, value in request.headers.items():
            if key.lower() not in _NOT_SENT:
                head.append(f"{key}: {value}")
        forwarded = request.headers.get("X-Forwarded-For")
        remote = request.remote or ""
        head.append(
            f"X-Forwarded-For: {forwarded}, {remote}" if forwarded else f"X-Forwarded-For: {remote}"
        )
        head.append(f"{HOP_HEADER}: {via}, {self.name}" if via else f"{HOP_HEADER}: {self.name}")
        head.append(f"{HOP_PROOF_HEADER}: {self._proof}")
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        message = "\r\n".join(head).encode("utf-8", "surrogateescape") + body
        target: Home | None = home
        while target is not None:
            try:
                response = await self._peers.request(
                    target.peer, message, no_body=request.method == "HEAD"
                )
            except NotReached as exc:
                self._suspect(target, exc)  # nothing reached it: try the next home
                target = self._home(function)
                continue
            except PeerError as exc:
                self._lost.inc()
                log.warning(
                    "home gateway lost during a call",
                    extra={"function": function, "home": target.name, "error": str(exc)},
                )
                return error_response(
                    502,
                    "home_gateway_lost",
                    f'the gateway {target.name!r} that serves function "{function}" went away '
                    f"during the call ({exc}); the call may or may not have run: retry it if "
                    "it is safe to",
                )
            answer = web.Response(status=response.status, body=response.body)
            for key, value in response.headers:
                if key.lower() not in _NOT_RETURNED:
                    answer.headers.add(key, value)
            answer.headers[HOME_HEADER] = target.name
            self._served.inc()
            return answer
        self._fallback.inc()
        return None

    def _home(self, function: str) -> Home | None:
        home = home_among(self.homes, function)
        if home is not None and home.id == self.run_id:
            home = None
        if len(self._home_of) >= _MAX_CACHED_NAMES:
            self._home_of.clear()
        self._home_of[function] = home
        return home

    def _suspect(self, home: Home, exc: BaseException) -> None:
        log.warning(
            "home gateway does not take connections; its functions go to the next home",
            extra={"home": home.name, "address": home.address, "error": repr(exc)},
        )
        self._suspects[home.id] = self._clock() + self.silent_s
        self._apply(self._listed)

    # -- membership ------------------------------------------------------------------------

    async def close(self) -> None:
        for probe in list(self._probes.values()):
            probe.cancel()
        self._peers.close()

    async def advertise(self, address: str) -> None:
        """Take calls for this gateway's functions at `address` from now on."""
        if not self.settings.enabled:
            return
        self.address = address.rstrip("/")
        await self.store.advertise_gateway(self.run_id, self.address)
        await self.refresh()
        log.info("taking calls from peer gateways", extra={"address": self.address})

    async def withdraw(self, *, linger: bool = False) -> None:
        """Stopping: peers send no more calls here from their next refresh on; with `linger`,
        wait until they have refreshed (a call sent on a connection the stop closes would be
        lost), if there are peers."""
        if self.address is None:
            return
        self.address = None
        try:
            await self.store.advertise_gateway(self.run_id, None)
        except Exception as exc:
            log.warning("could not withdraw this gateway's address: %r", exc)
            return
        if linger and not self._alone:
            await asyncio.sleep(self.settings.refresh_s * 1.5)

    async def refresh(self) -> None:
        """Read the list of homes (and advertise again if this run was taken for dead)."""
        listed = await self.store.list_gateway_homes(self.silent_s)
        missing = self.address is not None and all(h.id != self.run_id for h in listed)
        if missing and await self.store.advertise_gateway(self.run_id, self.address):
            listed = await self.store.list_gateway_homes(self.silent_s)
        self._apply(listed)

    async def run(self) -> None:
        """Refresh every `refresh_s`; while Postgres is away, keep the last list."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("could not read the gateways, keeping the last list: %r", exc)
            await asyncio.sleep(self.settings.refresh_s)

    def _apply(self, listed: list[GatewayHome]) -> None:
        self._listed = listed
        now = self._clock()
        listed_by_id = {h.id: h for h in listed}
        self._suspects = {i: t for i, t in self._suspects.items() if i in listed_by_id}
        for i, until in self._suspects.items():
            if until <= now and i not in self._probes:
                self._probe(listed_by_id[i])
        homes = [
            Home(id=h.id, name=h.name, address=h.address, peer=peer)
            for h in listed
            if h.id not in self._suspects
            and (h.id != self.run_id or h.address == self.address)  # not while stopping
            and (peer := _host_port(h.address)) is not None
        ]
        if homes == self.homes:
            self._tell(changed=False)
            return
        log.info("gateway homes changed", extra={"homes": [h.name for h in homes]})
        self.homes = homes
        self._home_of.clear()
        self._alone = not self.settings.enabled or all(h.id == self.run_id for h in homes)
        self._homes_gauge.set(len(homes))
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()
        self._tell(changed=True)

    def _probe(self, listed: GatewayHome) -> None:
        """A suspect's time is up: try a connection to it, off the call path, and take it back
        only if the connection is taken. (Taking it back blindly let a call find out again:
        during a partition that cost a connect timeout and moved its functions here and back,
        instances and all, every `silent_s`.)"""
        peer = _host_port(listed.address)

        async def probe() -> None:
            try:
                reached = peer is not None and await self._peers.probe(peer)
            finally:
                del self._probes[listed.id]
            if listed.id not in self._suspects:
                return
            if reached:
                del self._suspects[listed.id]
                log.info("home gateway takes connections again", extra={"home": listed.name})
                self._apply(self._listed)
            else:
                self._suspects[listed.id] = self._clock() + self.silent_s

        self._probes[listed.id] = asyncio.get_running_loop().create_task(probe())

    def _tell(self, *, changed: bool) -> None:
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:
                log.exception("a listener of the gateway homes failed")
