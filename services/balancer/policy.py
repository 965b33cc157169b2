"""The request policy, whichever engine carries the bytes (no HTTP library here).

``Policy.serve(exchange, host, path)`` decides what happens to one request; the engine
(``fast.py``, ``proxy.py``) parses and writes HTTP and implements ``Exchange``:

1. match a route (404 when none) and count the request in flight for its app;
2. an app scaled to zero with no ready replica holds the request (at most ``hold_max`` per
   app, for ``hold_timeout``; ``on_hold`` asks for a wake-up) until a replica is ready;
3. 503 without a ready replica, 413 for a body over ``max_body``;
4. pick a replica with the app's algorithm, skipping ejected replicas and those already
   tried (when every replica left is ejected, the ejected ones are tried anyway: an
   ejection is a guess from one failed connect, health's verdict still says ready; one
   engine hiccup that refuses every replica at once must not turn into ``eject_seconds``
   of 503s), count it in flight while the engine forwards the request (``Exchange.forward``,
   or ``Exchange.tunnel`` for an upgrade);
5. when an attempt fails before any response byte reached the client (a ``Failure``):
   a refused connection or a connect timeout ejects the replica (for ``eject_seconds``, or
   until health finds it ready after the ejection) and the request goes to another replica
   whatever its method, since nothing was sent; a connection closed before any response
   goes elsewhere only for an idempotent request without a body, and ejects the replica
   when it was a new connection; a read timeout is 504, anything else 502. Up to
   ``retries`` other replicas; an upgrade is tried once;
6. record status, latency and replica in ``stats``.

The balancer's own answers (``Exchange.reply``) say ``shoal: <message>``:

====  ==========================================================================
404   no route for this host and path
413   request body larger than ``max_body``
502   the replica failed (connection refused/reset, invalid response)
503   the app has no ready replica (or too many requests are held for a cold app)
504   the replica did not answer in time
====  ==========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.keys import AppKey
from core.logs import get_logger
from core.state import ReplicaHealth
from services.balancer.algorithms import Picker, make_picker
from services.balancer.routes import AppRoute, Backend, RouteTable, https_location
from services.balancer.stats import AppStats, Stats

log = get_logger("shoal.balancer.policy")

#: RFC 8555 8.3: where an ACME server fetches an HTTP-01 key authorization
ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    connect_timeout: float = 2.0
    read_timeout: float = 60.0
    max_body: int = 100 * 1024 * 1024
    eject_seconds: float = 3.0
    retries: int = 2
    hold_timeout: float = 30.0
    hold_max: int = 1000
    pool_size: int = 0  # aiohttp engine: 0 is unlimited keep-alive connections
    expose_replica: bool = True  # X-Shoal-Replica response header
    max_connections: int = 10_000  # client connections per worker; beyond: 503 and closed
    header_timeout: float = 10.0  # seconds for a whole request head once begun (then 408)


# -- how an attempt fails -----------------------------------------------------------------


class Failure(Exception):
    """An attempt on one replica failed before the client got any response byte.

    ``str(failure)`` completes "replica <id> ..." in the answer; the class tells the policy
    what to do: this base class answers ``status`` at once.
    """

    status = 502


class Refused(Failure):
    """No connection (refused, unreachable): nothing was sent."""

    def __init__(self, reason: str) -> None:
        super().__init__("refused the connection")
        self.reason = reason


class ConnectTimeout(Failure):
    status = 504

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not accept a connection within {seconds:g}s")


class Closed(Failure):
    """Closed or reset before any response. ``new``: the connection was opened for this
    request, so the replica itself is gone (Docker's proxy in front of a killed container
    accepts and closes); a pooled one may just have idled out."""

    def __init__(self, detail: str = "", *, new: bool = False) -> None:
        super().__init__("closed the connection" + (f": {detail}" if detail else ""))
        self.new = new


class ReadTimeout(Failure):
    status = 504

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not answer within {seconds:g}s")


class Invalid(Failure):
    def __init__(self, detail: str) -> None:
        super().__init__(f"sent an invalid response: {detail}")


# -- what the policy needs from an engine -------------------------------------------------


class Exchange(Protocol):
    """One client request as an engine holds it."""

    @property
    def content_length(self) -> int | None:
        """The declared body length, if any."""

    @property
    def too_large(self) -> bool:
        """The body read so far went over ``max_body``."""

    @property
    def retriable(self) -> bool:
        """Safe to send twice: an idempotent method without a body."""

    @property
    def upgrade(self) -> bool:
        """An ``Upgrade`` request (websocket): tunnelled, never retried."""

    def hash_key(self, header: str | None) -> str:
        """The ``hash`` algorithm's key: ``header``'s value, else the client's address."""

    @property
    def secure(self) -> bool:
        """The request came over the TLS listener."""

    @property
    def target(self) -> str:
        """The request target forwarded: normalised path and the query."""

    def reply(self, status: int, message: str, *, close: bool = False) -> int:
        """Answer ``shoal: <message>`` (``close``: then close the connection); -> status."""

    def respond(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        """Answer with ``body`` and ``headers`` of the balancer's own; -> status."""

    async def forward(self, backend: Backend) -> int:
        """Send the request to ``backend`` and relay its response -> the status relayed.
        Raises ``Failure`` while the client has got nothing yet; a failure after the
        response head went out is the engine's to handle (it cuts the connection)."""

    async def tunnel(self, backend: Backend) -> int:
        """Forward an upgrade request, then relay bytes both ways until either side ends."""


# -- ejections ---------------------------------------------------------------------------


class Ejected:
    """Replica ids ejected until a monotonic deadline; ``in`` checks expiry.

    A replica comes back when its deadline passes, or earlier when health reports it ready
    again with a verdict newer than the ejection (``readmit``): a container that was
    killed and restarted in place is back in rotation as soon as it answers probes.
    """

    __slots__ = ("at", "until")

    def __init__(self) -> None:
        self.until: dict[str, float] = {}
        self.at: dict[str, float] = {}  # wall-clock time of the ejection

    def __contains__(self, rid: object) -> bool:
        until = self.until.get(rid) if isinstance(rid, str) else None
        return until is not None and until > time.monotonic()

    def __len__(self) -> int:
        return len(self.until)

    def current(self) -> set[str]:
        """The replicas ejected now."""
        now = time.monotonic()
        return {rid for rid, until in self.until.items() if until > now}

    def add(self, rid: str, seconds: float) -> None:
        self.until[rid] = time.monotonic() + seconds
        self.at[rid] = time.time()

    def discard(self, rid: str) -> None:
        self.until.pop(rid, None)
        self.at.pop(rid, None)

    def readmit(self, replicas: Iterable[ReplicaHealth]) -> list[str]:
        """Readmit ejected replicas that health found ready after they were ejected."""
        back = [
            r.id
            for r in replicas
            if r.ready and not r.terminating and r.id in self.at and r.since > self.at[r.id]
        ]
        for rid in back:
            self.discard(rid)
        return back

    def purge(self) -> None:
        now = time.monotonic()
        for rid in [r for r, t in self.until.items() if t <= now]:
            self.discard(rid)


# -- the policy ----------------------------------------------------------------------------


class Policy:
    """The state every request shares: route table, pickers, in-flight counts per replica,
    ejections, held requests and statistics."""

    def __init__(
        self,
        options: ProxyOptions,
        *,
        instance: str,
        on_hold: Callable[[AppRoute], None] | None = None,
    ) -> None:
        self.options = options
        self.table = RouteTable([])
        self.pickers: dict[AppKey, Picker] = {}
        self.inflight: dict[str, int] = {}
        self.ejected = Ejected()
        self.stats = Stats()
        self.on_hold = on_hold
        #: HTTP-01 token -> (host, key authorization), answered on plain HTTP to requests
        #: for that host (``acme_manager.py``)
        self.challenges: Mapping[str, tuple[str, str]] = {}
        #: the port redirects to HTTPS name (the TLS listener's); None: 443
        self.https_port: int | None = None
        self._changed = asyncio.Event()
        self._rid = 0
        self._rid_prefix = f"{instance[-12:]}-{int(time.time()):x}-"

    def set_table(self, table: RouteTable) -> None:
        self.table = table
        for key, route in table.routes.items():
            picker = self.pickers.get(key)
            if picker is None or picker.algorithm != route.algorithm:
                self.pickers[key] = make_picker(route.algorithm)
        for key in [k for k in self.pickers if k not in table.routes]:
            del self.pickers[key]
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def next_request_id(self) -> str:
        self._rid += 1
        return f"{self._rid_prefix}{self._rid:x}"

    def _picker(self, route: AppRoute) -> Picker:
        picker = self.pickers.get(route.key)
        if picker is None:
            picker = self.pickers[route.key] = make_picker(route.algorithm)
        return picker

    # -- one request -------------------------------------------------------------------

    async def serve(self, ex: Exchange, host: str, path: str) -> None:
        """Serve one request (``host`` normalized, ``path`` without the query)."""
        started = time.perf_counter()
        challenge = path.startswith(ACME_CHALLENGE_PATH) and not ex.secure
        if challenge and self.challenges:
            known = self.challenges.get(path[len(ACME_CHALLENGE_PATH) :])
            if known is not None and known[0] == host:
                status = ex.respond(
                    200, known[1].encode(), [("Content-Type", "application/octet-stream")]
                )
                self.stats.unrouted.done(None, status, time.perf_counter() - started)
                return
        route = self.table.match(host, path)
        if route is None:
            ex.reply(404, f"no route for host {host!r} and path {path!r}")
            self.stats.unrouted.done(None, 404, time.perf_counter() - started)
            return
        stats = self.stats.app(route.key)
        stats.inflight += 1
        status, replica = 500, None
        try:
            if route.redirect and not challenge and not ex.secure:
                location = https_location(host, ex.target, self.https_port)
                if location is None:
                    status = ex.reply(400, f"malformed host {host!r}", close=True)
                else:
                    status = ex.respond(308, b"", [("Location", location)])
                return
            if not route.backends and route.scale_to_zero:
                held = await self._hold(route, stats)
                if held is None:
                    status = ex.reply(503, self._hold_expired(route))
                    return
                route = held
            refused = self._refuse(ex, route)
            if refused:
                status = refused
                return
            picker = self._picker(route)
            key = ex.hash_key(route.hash_header) if route.algorithm == "hash" else ""
            upgrade = ex.upgrade
            inflight = self.inflight
            tried: set[str] = set()
            last = ""
            for _ in range(1 if upgrade else 1 + max(0, self.options.retries)):
                backend = self._choose(picker, route, key, tried)
                if backend is None:
                    break
                rid = replica = backend.id
                tried.add(rid)
                inflight[rid] = inflight.get(rid, 0) + 1
                try:
                    status = await (ex.tunnel(backend) if upgrade else ex.forward(backend))
                    return
                except Failure as err:
                    if ex.too_large:  # the replica hung up on a body over the limit
                        status = self._too_large(ex)
                        return
                    last = f"replica {rid} {err}"
                    answer = self._after(route, stats, backend, err, len(tried), ex.retriable)
                    if answer:
                        status = ex.reply(answer, last)
                        return
                finally:
                    n = inflight[rid] - 1
                    if n:
                        inflight[rid] = n
                    else:
                        del inflight[rid]
                stats.retries += 1
            replica = None
            if not last:
                status = ex.reply(503, f"app {route.key} has no ready replica (all ejected)")
            else:
                status = ex.reply(502, last)
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499  # the client went away
            raise
        finally:
            stats.inflight -= 1
            stats.done(replica, status, time.perf_counter() - started)

    def _hold_expired(self, route: AppRoute) -> str:
        return (
            f"app {route.key} is scaled to zero and no replica became ready within "
            f"{self.options.hold_timeout:g}s"
        )

    def _choose(self, picker: Picker, route: AppRoute, key: str, tried: set[str]) -> Backend | None:
        """The next replica to try: the route's own backends (its region's, with
        ``--region``), then its ``remote`` ones, skipping those tried and ejected; when
        every replica not yet tried is ejected, health still finds them ready, so they are
        tried anyway in the same order (Envoy's panic routing) rather than a 503."""
        inflight = self.inflight
        exclude: Collection[str] = ()
        if tried or self.ejected:
            exclude = tried | self.ejected.current()
        tiers = (route.backends, route.remote) if route.remote else (route.backends,)
        for tier in tiers:
            backend = picker.pick(tier, key=key, exclude=exclude, inflight=inflight)
            if backend is not None:
                return backend
        if len(exclude) > len(tried):
            for tier in tiers:
                backend = picker.pick(tier, key=key, exclude=tried, inflight=inflight)
                if backend is not None:
                    return backend
        return None

    def _refuse(self, ex: Exchange, route: AppRoute) -> int:
        """Answer what cannot be forwarded (no replica, a body too large) -> its status,
        or 0 to go on."""
        if not route.backends:
            return ex.reply(503, f"app {route.key} has no ready replica")
        if ex.too_large:  # the body went over the limit while it was buffered
            return self._too_large(ex)
        length = ex.content_length
        if length is not None and length > self.options.max_body:
            limit = self.options.max_body
            msg = f"request body of {length} bytes exceeds the limit of {limit}"
            return ex.reply(413, msg, close=True)
        return 0

    def _too_large(self, ex: Exchange) -> int:
        msg = f"request body exceeds the limit of {self.options.max_body} bytes"
        return ex.reply(413, msg, close=True)

    def _after(
        self,
        route: AppRoute,
        stats: AppStats,
        backend: Backend,
        err: Failure,
        tried: int,
        retriable: bool,
    ) -> int:
        """After a failed attempt (``tried`` replicas so far): the status to answer, or 0
        to try another replica."""
        if isinstance(err, Refused):
            stats.upstream_errors += 1
            self._eject(route, backend, stats, f"connect failed: {err.reason}")
            return 0
        if isinstance(err, ConnectTimeout):
            stats.upstream_errors += 1
            self._eject(route, backend, stats, "connect timeout")
            return err.status if tried >= len(route.backends) + len(route.remote) else 0
        if isinstance(err, Closed):
            stats.upstream_errors += 1
            if err.new:
                self._eject(route, backend, stats, f"new connection {err}")
            return 0 if retriable else err.status
        return err.status

    def _eject(self, route: AppRoute, backend: Backend, stats: AppStats, why: str) -> None:
        if backend.id not in self.ejected:
            stats.ejections += 1
            log.warning("replica ejected", app=str(route.key), replica=backend.id, reason=why)
        self.ejected.add(backend.id, self.options.eject_seconds)

    # -- scale from zero ---------------------------------------------------------------

    async def _hold(self, route: AppRoute, stats: AppStats) -> AppRoute | None:
        """Wait until the app has a ready replica -> its new route; None when too many
        requests are held already or none became ready in time."""
        if stats.held >= self.options.hold_max:
            return None
        stats.held += 1
        try:
            if self.on_hold is not None:
                self.on_hold(route)
            deadline = time.monotonic() + self.options.hold_timeout
            while True:
                current = self.table.routes.get(route.key)
                if current is not None and current.backends:
                    return current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
        finally:
            stats.held -= 1
