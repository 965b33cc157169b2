"""The aiohttp engine (``--engine aiohttp``): aiohttp's low-level server and a pooled
``ClientSession``. The reference and fallback engine, about half as fast as ``fast.py``.

``policy.Policy`` decides what happens to each request; this module only speaks HTTP:
``AiohttpExchange`` forwards one request to the replica the policy picked, streams bodies
both ways (small responses with a known length are relayed in one write), proxies
websockets message by message, and turns aiohttp's errors into the policy's ``Failure``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, istr
from yarl import URL

from core.logs import get_logger
from services.balancer.aiohttp_guard import GuardedServer
from services.balancer.headers import (
    CLIENT_FORWARDED,
    IDEMPOTENT,
    WEBSOCKET_HANDSHAKE,
    client_key,
    forwarded_for,
    refuse_head,
    strip_hop_by_hop,
)
from services.balancer.policy import (
    Closed,
    ConnectTimeout,
    Failure,
    Invalid,
    Policy,
    ProxyOptions,
    ReadTimeout,
    Refused,
)
from services.balancer.routes import Backend, normalize_host, normalize_path

log = get_logger("shoal.balancer.proxy")

X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_HOST = istr("X-Forwarded-Host")
X_REAL_IP = istr("X-Real-IP")
X_REQUEST_ID = istr("X-Request-Id")
X_SHOAL_REPLICA = istr("X-Shoal-Replica")
BUFFER_LIMIT = 256 * 1024
CONTENT_LENGTH = frozenset({"content-length"})


class BodyTooLarge(Exception):
    pass


def text(status: int, message: str, request_id: str) -> web.Response:
    headers = {"X-Request-Id": request_id} if request_id else None
    return web.Response(status=status, text=f"shoal: {message}\n", headers=headers)


def failure(err: Exception, options: ProxyOptions) -> Failure:
    """The policy's name for what went wrong with a replica."""
    if isinstance(err, aiohttp.WSServerHandshakeError):
        return Failure(f"refused the websocket: {err.status}")
    if isinstance(err, aiohttp.ClientConnectorError):
        return Refused(err.strerror or str(err))
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(options.connect_timeout)
    if isinstance(err, aiohttp.SocketTimeoutError):
        return ReadTimeout(options.read_timeout)
    if isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return Closed(str(err))
    if isinstance(err, aiohttp.ClientResponseError):
        return Invalid(err.message)
    if isinstance(err, aiohttp.ClientPayloadError):
        return Failure(f"failed mid-body: {err}")
    return Failure(f"failed: {err or type(err).__name__}")


class AiohttpExchange:
    """One request (a ``policy.Exchange``); ``response`` is what the handler returns."""

    __slots__ = ("engine", "request", "request_id", "response", "target", "too_large")

    def __init__(
        self,
        engine: AiohttpEngine,
        request: web.BaseRequest,
        request_id: str,
        target: str | None = None,
    ) -> None:
        self.engine = engine
        self.request = request
        #: the path and query forwarded (normalised, see ``routes.normalize_path``)
        self.target = request.raw_path if target is None else target
        self.request_id = request_id
        self.response: web.StreamResponse | None = None
        self.too_large = False

    @property
    def content_length(self) -> int | None:
        return self.request.content_length

    @property
    def retriable(self) -> bool:
        return self.request.method in IDEMPOTENT and not self.request.body_exists

    @property
    def upgrade(self) -> bool:
        return self.request.headers.get("Upgrade", "").lower() == "websocket"

    def hash_key(self, header: str | None) -> str:
        value = self.request.headers.get(header) if header else None
        return client_key(header, value, self.request.remote)

    def reply(self, status: int, message: str, *, close: bool = False) -> int:
        self.response = text(status, message, self.request_id)
        return status

    @property
    def secure(self) -> bool:
        return self.request.secure

    def respond(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        out = CIMultiDict(headers)
        if self.request_id:
            out["X-Request-Id"] = self.request_id
        self.response = web.Response(status=status, body=body, headers=out)
        return status

    async def forward(self, backend: Backend) -> int:
        request, engine = self.request, self.engine
        assert engine.session is not None
        data = self._limited_body() if request.body_exists else None
        try:
            async with engine.session.request(
                request.method,
                URL(backend.base + self.target, encoded=True),
                headers=self._headers(),
                data=data,
                allow_redirects=False,
            ) as up:
                self.response = response = await self._relay(up, backend)
        except aiohttp.ClientError as err:
            raise failure(err, engine.options) from err
        return response.status

    def _headers(self) -> CIMultiDict[str]:
        """The request's headers as the replica gets them."""
        request = self.request
        src = request.headers
        out = CIMultiDict(strip_hop_by_hop(src.items(), src.get("Connection"), CLIENT_FORWARDED))
        out[X_FORWARDED_FOR] = out[X_REAL_IP] = forwarded_for(request.remote)
        out[X_FORWARDED_PROTO] = request.scheme
        out[X_FORWARDED_HOST] = request.host
        out[X_REQUEST_ID] = self.request_id
        if "Host" not in out and request.host:
            out["Host"] = request.host
        return out

    async def _limited_body(self) -> AsyncIterator[bytes]:
        limit = self.engine.options.max_body
        seen = 0
        async for chunk in self.request.content.iter_any():
            seen += len(chunk)
            if seen > limit:
                self.too_large = True
                raise BodyTooLarge
            yield chunk

    async def _relay(self, up: aiohttp.ClientResponse, backend: Backend) -> web.StreamResponse:
        request = self.request
        headers = CIMultiDict(
            strip_hop_by_hop(up.headers.items(), up.headers.get("Connection"), CONTENT_LENGTH)
        )
        value = up.headers.get("Content-Length", "")
        length = int(value) if value.isdigit() else None
        headers[X_REQUEST_ID] = self.request_id
        if self.engine.options.expose_replica:
            headers[X_SHOAL_REPLICA] = backend.id
        else:  # as the fast engine: a replica cannot name itself in the balancer's header
            headers.popall(X_SHOAL_REPLICA, None)
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

    async def tunnel(self, backend: Backend) -> int:
        request, engine = self.request, self.engine
        assert engine.session is not None
        fwd = self._headers()
        for h in WEBSOCKET_HANDSHAKE | {"sec-websocket-protocol"}:
            fwd.popall(h, None)
        protocols = tuple(
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        )
        try:
            upstream = await engine.session.ws_connect(
                URL(backend.base + self.target, encoded=True),
                headers=fwd,
                protocols=protocols,
                autoping=True,
                max_msg_size=0,
            )
        except (aiohttp.ClientError, TimeoutError) as err:
            raise failure(err, engine.options) from err
        self.response = ws = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoping=True,
            max_msg_size=0,
        )
        try:
            await ws.prepare(request)
            await pump(ws, upstream)
        finally:
            await upstream.close()
            await ws.close()
        return ws.status


async def pump(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Relay websocket messages both ways until either side closes."""

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


class AiohttpEngine:
    """Listener and upstream session."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.options = policy.options
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.ServerRunner | None = None

    async def start(
        self,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Listen on ``host:port``, or accept on ``sock`` (inherited from the master);
        with ``tls``, HTTPS."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.options.pool_size,
                limit_per_host=0,
                keepalive_timeout=15,
                enable_cleanup_closed=False,
                ttl_dns_cache=None,
            ),
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
        server = GuardedServer(
            self.handle,
            max_connections=self.options.max_connections,
            header_timeout=self.options.header_timeout,
            access_log=None,
        )
        self.runner = web.ServerRunner(server, access_log=None, handle_signals=False)
        await self.runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self.runner, sock, backlog=1024, ssl_context=tls)
        else:
            site = web.TCPSite(
                self.runner,
                host,
                port,
                reuse_port=reuse_port or None,
                backlog=1024,
                ssl_context=tls,
            )
        await site.start()

    async def close(self) -> None:
        """Stop listening; in-flight requests finish first."""
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = request.headers.get(X_REQUEST_ID) or self.policy.next_request_id()
        headers = request.headers
        refusal = refuse_head(
            len(headers.getall("Host", ())), ",".join(headers.getall("Connection", ()))
        )
        path, sep, query = request.raw_path.partition("?")
        route_path = normalize_path(path)
        if refusal is None and route_path is None:
            refusal = "malformed path"
        if refusal is not None or route_path is None:
            response = text(400, refusal or "malformed path", rid)
            response.force_close()
            return response
        ex = AiohttpExchange(self, request, rid, f"{route_path}{sep}{query}")
        await self.policy.serve(ex, normalize_host(request.host), route_path)
        assert ex.response is not None
        return ex.response
