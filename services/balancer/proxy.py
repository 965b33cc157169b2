"""The proxy itself (I/O): an aiohttp low-level server handler forwarding to replicas.

Per request: match a route, pick a replica with the app's algorithm, forward with a
keep-alive pooled client, stream bodies both ways (small responses with a known length are
relayed in one write), and answer with a clear body when Shoal itself must answer:

====  ==========================================================================
404   no route for this host and path
413   request body larger than ``--max-body``
502   the replica failed (connection refused/reset, invalid response)
503   the app has no ready replica (or too many requests are held for a cold app)
504   the replica did not answer in time
====  ==========================================================================

A connection refused or a connect timeout ejects the replica at once (for
``eject_seconds``, or until health republishes it) and the request goes to another
replica; so does an idempotent body-less request whose connection was reset before any
response. Replicas reported terminating get no new request; in-flight ones finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, istr
from yarl import URL

from core.logs import get_logger
from core.state import ReplicaHealth
from services.balancer.algorithms import Picker, make_picker
from services.balancer.headers import (
    HOP_BY_HOP,
    IDEMPOTENT,
    WEBSOCKET_HANDSHAKE,
    client_key,
    connection_tokens,
    forwarded_for,
)
from services.balancer.routes import AppRoute, Backend, RouteTable, normalize_host
from services.balancer.stats import AppStats, Stats

log = get_logger("shoal.balancer.proxy")

X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_HOST = istr("X-Forwarded-Host")
X_REQUEST_ID = istr("X-Request-Id")
X_SHOAL_REPLICA = istr("X-Shoal-Replica")
BUFFER_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    connect_timeout: float = 2.0
    read_timeout: float = 60.0
    max_body: int = 100 * 1024 * 1024
    eject_seconds: float = 3.0
    retries: int = 2
    hold_timeout: float = 30.0
    hold_max: int = 1000
    pool_size: int = 0  # 0: unlimited keep-alive connections
    expose_replica: bool = True  # X-Shoal-Replica response header


class BodyTooLarge(Exception):
    pass


class BodyState:
    """How far the client's request body got: retry only what was not sent."""

    __slots__ = ("started", "too_large")

    def __init__(self) -> None:
        self.started = False
        self.too_large = False


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
        until = self.until.get(rid)  # type: ignore[call-overload]
        return until is not None and until > time.monotonic()

    def __len__(self) -> int:
        return len(self.until)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.until)

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


def text(status: int, message: str, request_id: str = "") -> web.Response:
    headers = {"X-Request-Id": request_id} if request_id else None
    return web.Response(status=status, text=f"shoal: {message}\n", headers=headers)


class Proxy:
    def __init__(
        self,
        options: ProxyOptions,
        *,
        instance: str,
        on_hold: Callable[[AppRoute], None] | None = None,
    ) -> None:
        self.options = options
        self.instance = instance
        self.table = RouteTable([])
        self.pickers: dict[str, Picker] = {}
        self.inflight: dict[str, int] = {}
        self.ejected = Ejected()
        self.stats = Stats()
        self.on_hold = on_hold
        self._changed = asyncio.Event()
        self._rid = 0
        self._rid_prefix = f"{instance[-12:]}-{int(time.time()):x}-"
        self.session: aiohttp.ClientSession | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.options.pool_size,
            limit_per_host=0,
            keepalive_timeout=15,
            enable_cleanup_closed=False,
            ttl_dns_cache=None,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.options.connect_timeout,
                sock_read=self.options.read_timeout,
            ),
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

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

    # -- the handler -------------------------------------------------------------------

    def request_id(self, request: web.BaseRequest) -> str:
        rid = request.headers.get(X_REQUEST_ID)
        return rid or self.next_request_id()

    def next_request_id(self) -> str:
        self._rid += 1
        return f"{self._rid_prefix}{self._rid:x}"

    def picker(self, route: AppRoute) -> Picker:
        picker = self.pickers.get(route.key)
        if picker is None:
            picker = self.pickers[route.key] = make_picker(route.algorithm)
        return picker

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        rid = self.request_id(request)
        host = normalize_host(request.host)
        route = self.table.match(host, request.path)
        if route is None:
            self.stats.app("-").done(None, 404, time.perf_counter() - started)
            return text(404, f"no route for host {host!r} and path {request.path!r}", rid)
        stats = self.stats.app(route.key)
        stats.inflight += 1
        status = 500
        replica: str | None = None
        try:
            resp, replica = await self._serve(request, route, stats, rid)
            status = resp.status
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499  # the client went away
            raise
        finally:
            stats.inflight -= 1
            stats.done(replica, status, time.perf_counter() - started)

    async def _serve(
        self, request: web.BaseRequest, route: AppRoute, stats: AppStats, rid: str
    ) -> tuple[web.StreamResponse, str | None]:
        if not route.backends and route.scale_to_zero:
            held = await self.hold(route, stats)
            if held is None:
                return text(
                    503,
                    f"app {route.key} is scaled to zero and no replica became ready within "
                    f"{self.options.hold_timeout:g}s",
                    rid,
                ), None
            route = held
        if not route.backends:
            return text(503, f"app {route.key} has no ready replica", rid), None

        length = request.content_length
        if length is not None and length > self.options.max_body:
            return text(
                413,
                f"request body of {length} bytes exceeds the limit of {self.options.max_body}",
                rid,
            ), None
        headers = request.headers
        if headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, route, rid)

        picker = self.picker(route)
        key = ""
        if route.algorithm == "hash":
            hh = route.hash_header
            key = client_key(hh, headers.get(hh) if hh else None, request.remote)
        has_body = request.body_exists
        retriable_method = request.method in IDEMPOTENT and not has_body
        fwd = self._forward_headers(request, rid)
        tried: set[str] = set()
        attempts = 1 + max(0, self.options.retries)
        last_error = ""
        body = BodyState()
        for _ in range(attempts):
            exclude: Collection[str] = ()
            if tried or self.ejected:
                exclude = tried | {r for r in self.ejected.until if r in self.ejected}
            backend = picker.pick(route.backends, key=key, exclude=exclude, inflight=self.inflight)
            if backend is None:
                break
            tried.add(backend.id)
            try:
                resp = await self._forward(request, backend, fwd, has_body, body, rid)
                return resp, backend.id
            except aiohttp.ClientConnectorError as err:
                # refused, unreachable: nothing was sent, any request can go elsewhere
                self.eject(route, backend, stats, f"connect failed: {err.strerror or err}")
                last_error = f"replica {backend.id} refused the connection"
            except aiohttp.ConnectionTimeoutError:
                self.eject(route, backend, stats, "connect timeout")
                last_error = (
                    f"replica {backend.id} did not accept a connection within "
                    f"{self.options.connect_timeout:g}s"
                )
                if len(tried) >= len(route.backends):
                    return text(504, last_error, rid), backend.id
            except aiohttp.SocketTimeoutError:
                return text(
                    504,
                    f"replica {backend.id} did not answer within {self.options.read_timeout:g}s",
                    rid,
                ), backend.id
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:
                if body.too_large:
                    return self._too_large(rid), backend.id
                last_error = f"replica {backend.id} closed the connection: {err}"
                if not retriable_method or body.started:
                    return text(502, last_error, rid), backend.id
            except aiohttp.ClientResponseError as err:
                return text(
                    502, f"replica {backend.id} sent an invalid response: {err.message}", rid
                ), backend.id
            except aiohttp.ClientPayloadError as err:
                return text(502, f"replica {backend.id} failed mid-body: {err}", rid), backend.id
            except aiohttp.ClientError as err:
                if body.too_large:
                    return self._too_large(rid), backend.id
                return text(502, f"replica {backend.id} failed: {err}", rid), backend.id
            if body.started:
                return text(502, last_error, rid), backend.id
            stats.retries += 1
        if not last_error:
            return text(503, f"app {route.key} has no ready replica (all ejected)", rid), None
        return text(502, last_error, rid), None

    def _too_large(self, rid: str) -> web.Response:
        return text(413, f"request body exceeds the limit of {self.options.max_body} bytes", rid)

    def eject(self, route: AppRoute, backend: Backend, stats: AppStats, why: str) -> None:
        if backend.id not in self.ejected:
            stats.ejections += 1
            log.warning("replica ejected", app=route.key, replica=backend.id, reason=why)
        stats.upstream_errors += 1
        self.ejected.add(backend.id, self.options.eject_seconds)

    def _forward_headers(self, request: web.BaseRequest, rid: str) -> CIMultiDict[str]:
        src = request.headers
        conn = src.get("Connection")
        drop = HOP_BY_HOP | connection_tokens(conn) if conn else HOP_BY_HOP
        out: CIMultiDict[str] = CIMultiDict()
        for k, v in src.items():
            if k.lower() not in drop:
                out.add(k, v)
        out[X_FORWARDED_FOR] = forwarded_for(src.get(X_FORWARDED_FOR), request.remote)
        out[X_FORWARDED_PROTO] = src.get(X_FORWARDED_PROTO) or request.scheme
        out[X_FORWARDED_HOST] = src.get(X_FORWARDED_HOST) or request.host
        out[X_REQUEST_ID] = rid
        if "Host" not in out and request.host:
            out["Host"] = request.host
        return out

    async def _limited_body(
        self, request: web.BaseRequest, state: BodyState
    ) -> AsyncIterator[bytes]:
        limit = self.options.max_body
        seen = 0
        async for chunk in request.content.iter_any():
            state.started = True
            seen += len(chunk)
            if seen > limit:
                state.too_large = True
                raise BodyTooLarge
            yield chunk

    async def _forward(
        self,
        request: web.BaseRequest,
        backend: Backend,
        fwd: CIMultiDict[str],
        has_body: bool,
        body: BodyState,
        rid: str,
    ) -> web.StreamResponse:
        assert self.session is not None
        self.inflight[backend.id] = self.inflight.get(backend.id, 0) + 1
        try:
            data = self._limited_body(request, body) if has_body else None
            url = URL(backend.base + request.raw_path, encoded=True)
            async with self.session.request(
                request.method, url, headers=fwd, data=data, allow_redirects=False
            ) as up:
                return await self._relay(request, up, backend, rid)
        finally:
            n = self.inflight[backend.id] - 1
            if n:
                self.inflight[backend.id] = n
            else:
                del self.inflight[backend.id]

    async def _relay(
        self,
        request: web.BaseRequest,
        up: aiohttp.ClientResponse,
        backend: Backend,
        rid: str,
    ) -> web.StreamResponse:
        conn = up.headers.get("Connection")
        drop = HOP_BY_HOP | connection_tokens(conn) if conn else HOP_BY_HOP
        headers: CIMultiDict[str] = CIMultiDict()
        length: int | None = None
        for k, v in up.headers.items():
            lk = k.lower()
            if lk in drop:
                continue
            if lk == "content-length":
                length = int(v) if v.isdigit() else None
                continue
            headers.add(k, v)
        headers[X_REQUEST_ID] = rid
        if self.options.expose_replica:
            headers[X_SHOAL_REPLICA] = backend.id
        status = up.status
        no_body = request.method == "HEAD" or status in (204, 304) or status < 200
        if not no_body and length is not None and length <= BUFFER_LIMIT:
            body = await up.read()
            return web.Response(status=status, reason=up.reason, headers=headers, body=body)
        resp = web.StreamResponse(status=status, reason=up.reason, headers=headers)
        if length is not None:
            resp.content_length = length
        await resp.prepare(request)
        if not no_body:
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as err:
                # headers are gone already: all we can do is cut the client's connection
                log.warning("upstream failed mid-response", replica=backend.id, error=str(err))
                if request.transport is not None:
                    request.transport.close()
                return resp
        await resp.write_eof()
        return resp

    # -- websockets --------------------------------------------------------------------

    async def _websocket(
        self, request: web.BaseRequest, route: AppRoute, rid: str
    ) -> tuple[web.StreamResponse, str | None]:
        assert self.session is not None
        picker = self.picker(route)
        key = ""
        if route.algorithm == "hash":
            hh = route.hash_header
            key = client_key(hh, request.headers.get(hh) if hh else None, request.remote)
        backend = picker.pick(route.backends, key=key, exclude=self.ejected, inflight=self.inflight)
        if backend is None:
            return text(503, f"app {route.key} has no ready replica", rid), None
        fwd = self._forward_headers(request, rid)
        for h in WEBSOCKET_HANDSHAKE | {"sec-websocket-protocol"}:
            fwd.popall(h, None)
        protocols = tuple(
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        )
        try:
            upstream = await self.session.ws_connect(
                URL(backend.base + request.raw_path, encoded=True),
                headers=fwd,
                protocols=protocols,
                autoping=True,
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as err:
            return text(502, f"replica {backend.id} refused the websocket: {err.status}", rid), (
                backend.id
            )
        except (aiohttp.ClientError, TimeoutError) as err:
            if isinstance(err, aiohttp.ClientConnectorError):
                self.eject(route, backend, self.stats.app(route.key), "connect failed")
            return text(502, f"replica {backend.id}: websocket connect failed: {err}", rid), (
                backend.id
            )
        self.inflight[backend.id] = self.inflight.get(backend.id, 0) + 1
        ws = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoping=True,
            max_msg_size=0,
        )
        try:
            await ws.prepare(request)
            await self._pump(ws, upstream)
        finally:
            n = self.inflight.get(backend.id, 1) - 1
            if n > 0:
                self.inflight[backend.id] = n
            else:
                self.inflight.pop(backend.id, None)
            await upstream.close()
            await ws.close()
        return ws, backend.id

    async def _pump(
        self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
    ) -> None:
        async def downstream() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await client.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await client.send_bytes(msg.data)
                else:
                    break
            await client.close(code=upstream.close_code or 1000)

        async def upstream_dir() -> None:
            async for msg in client:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await upstream.send_bytes(msg.data)
                else:
                    break
            await upstream.close(code=client.close_code or 1000)

        tasks = [
            asyncio.create_task(downstream(), name="ws-down"),
            asyncio.create_task(upstream_dir(), name="ws-up"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    # -- scale from zero ---------------------------------------------------------------

    async def hold(self, route: AppRoute, stats: AppStats) -> AppRoute | None:
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
                    await asyncio.wait_for(self._changed.wait(), remaining)
        finally:
            stats.held -= 1
