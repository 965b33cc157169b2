"""The fast engine (the default): HTTP/1.1 on asyncio protocols with httptools (llhttp).

``policy.Policy`` decides what happens to each request (route, pick, retry, eject, hold,
statistics); this module only carries the bytes: no per-request client or session
objects, no header multidicts, and response bytes are relayed from the upstream's
``data_received`` straight into the client's transport. Per request there is one
coroutine step of the policy, one of the forward, and one future.

Connections:

- ``ClientConn`` — one per user connection: parses requests (keep-alive and pipelining:
  requests are served one after the other, in order) into ``Request``s, the policy's
  ``Exchange``: it writes the balancer's answers and forwards to the replica picked.
- ``UpstreamConn`` — one per replica connection, kept in a per-replica idle pool
  (keep-alive). While bound to a request it relays the response to the client, re-framing
  it (Content-Length kept, otherwise chunked). Flow control both ways: a full client buffer
  pauses the upstream's reading, and vice versa.
- Upgrades (websockets): the request goes to a fresh upstream connection; only once the
  replica answers 101 do both connections become a raw byte tunnel. Any other answer is
  relayed as a response and the client connection closed after it.

Hostile clients: a request head is at most ``MAX_HEAD`` bytes (431 beyond) and must arrive
within ``header_timeout`` once begun (408); at most ``max_connections`` client connections
(beyond: 503, closed); reading stops while ``MAX_PIPELINED`` requests wait on a connection;
a head with two Host headers, or a ``Connection`` header naming Host, is refused (400); the
path is normalised (``routes.normalize_path``) before routing and forwarded so; the client's
X-Forwarded-*/X-Real-IP/Forwarded are replaced by the balancer's own.

Timeouts: a connect timeout (``wait_for`` on new connections only) and a read timeout
(checked by one sweeper task for all busy upstreams, so no timer per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence

import httptools

from core.logs import get_logger
from services.balancer.headers import (
    CLIENT_FORWARDED,
    HOP_BY_HOP,
    IDEMPOTENT,
    MAX_HEAD,
    MAX_PIPELINED,
    refuse_head,
)
from services.balancer.policy import (
    Closed,
    ConnectTimeout,
    Failure,
    Invalid,
    Policy,
    ReadTimeout,
    Refused,
)
from services.balancer.routes import Backend, normalize_host, normalize_path

log = get_logger("shoal.balancer.fast")

HOP = frozenset(h.encode() for h in HOP_BY_HOP)
# replaced by the balancer's own values on the way up
OWN_REQUEST = frozenset({b"x-request-id", *(h.encode() for h in CLIENT_FORWARDED)})
OWN_RESPONSE = frozenset({b"x-request-id", b"x-shoal-replica"})
HOP_OWN_RESPONSE = HOP | OWN_RESPONSE
IDEMPOTENT_B = frozenset(m.encode() for m in IDEMPOTENT)
REASONS = {
    200: b"OK",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
BODY_BUFFER = 1024 * 1024  # request body buffered before an upstream is bound
IDLE_PER_BACKEND = 512
CLIENT_IDLE_TIMEOUT = 75.0
LINGER_SECONDS = 2.0


class Request:
    """One request on a client connection: what was parsed, and the policy's ``Exchange``
    (the balancer's answers and the forwarding to a replica)."""

    __slots__ = (
        "body",
        "buffered",
        "chunked",
        "complete",
        "conn",
        "connection",
        "content_length",
        "discard",
        "head_size",
        "headers",
        "host",
        "hosts",
        "keep_alive",
        "method",
        "refused",
        "request_id",
        "sink",
        "sink_end",
        "size",
        "too_large",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self, conn: ClientConn) -> None:
        self.conn = conn
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b"GET"
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.host = b""
        self.request_id = b""
        self.connection = b""
        self.hosts = 0
        self.head_size = 0
        self.refused: tuple[int, str] | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.complete = False
        self.body: list[bytes] = []
        self.buffered = 0
        self.size = 0
        self.too_large = False
        self.discard = False
        self.sink: Callable[[bytes], None] | None = None
        self.sink_end: Callable[[], None] | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    # -- policy.Exchange ----------------------------------------------------------------

    @property
    def retriable(self) -> bool:
        return not self.has_body and self.method in IDEMPOTENT_B

    def hash_key(self, header: str | None) -> str:
        if header is not None:
            want = header.lower().encode()
            for name, value in self.headers:
                if name.lower() == want and value:
                    return value.decode("latin-1")
        return self.conn.client_ip

    def reply(self, status: int, message: str, *, close: bool = False) -> int:
        conn = self.conn
        if close or self.upgrade:  # an upgrade is a tunnel or an error, never more requests
            conn.keep_alive = False
        if conn.transport is not None:
            keep_alive = conn.keep_alive and self.keep_alive
            conn.transport.write(error_response(status, message, self.request_id, keep_alive))
        return status

    @property
    def secure(self) -> bool:
        return self.conn.tls

    @property
    def target(self) -> str:
        return self.url.decode("latin-1")

    def respond(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        conn = self.conn
        if self.upgrade:
            conn.keep_alive = False
        if conn.transport is not None:
            keep_alive = conn.keep_alive and self.keep_alive
            conn.transport.write(response_bytes(status, body, headers, self.request_id, keep_alive))
        return status

    async def forward(self, backend: Backend) -> int:
        conn = self.conn
        engine = conn.engine
        up = engine.idle_conn(backend)
        if up is None:
            up = await engine.connect(backend)
        if self.too_large:  # the body went over the limit while we were connecting
            engine.release(up)
            raise Failure("request body too large")
        engine.bound[conn] = up
        conn.status = 0
        try:
            reusable = await up.start(conn, self, self.head())
        except Failure as err:
            if not up.responded:
                raise
            # the head is out: all we can do is cut the connection
            conn.keep_alive = False
            if self.too_large:
                return 413
            log.warning("upstream failed mid-response", replica=backend.id, error=str(err))
            return conn.status or 502
        finally:
            engine.bound.pop(conn, None)
        if reusable and self.complete:
            engine.release(up)
        elif up.transport is not None:
            up.transport.close()
        if not self.complete:
            conn.keep_alive = False  # the rest of the body was never read
        return conn.status

    async def tunnel(self, backend: Backend) -> int:
        """Send the upgrade request; tunnel if the replica answers 101, else relay its
        answer as a response (the client connection is closed after it either way)."""
        conn = self.conn
        engine = conn.engine
        conn.keep_alive = False
        up = await engine.connect(backend)
        engine.bound[conn] = up
        conn.status = 0
        try:
            await up.start(conn, self, self.head(upgrade=True))
            if up.tunnel is None:  # not switched: answered like any request
                return conn.status
            conn.resume()
            await conn.tunnel_done.wait()  # the tunnel runs in the protocols' callbacks
            return 101
        except Failure as err:
            if not up.responded:
                raise
            log.warning("upstream failed mid-response", replica=backend.id, error=str(err))
            return conn.status or 502
        finally:
            engine.bound.pop(conn, None)
            if up.transport is not None:
                up.transport.close()

    def head(self, *, upgrade: bool = False) -> bytes:
        """The request as the replica gets it."""
        drop = HOP | OWN_REQUEST
        if self.connection:
            drop = drop | connection_tokens(self.connection)
        if upgrade:
            drop = OWN_REQUEST
        parts = [self.method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            if name.lower() not in drop:
                parts.append(name + b": " + value + b"\r\n")
        ip = self.conn.client_ip.encode() or b"unknown"
        parts.append(b"X-Forwarded-For: " + ip + b"\r\nX-Real-IP: " + ip + b"\r\n")
        parts.append(
            b"X-Forwarded-Proto: https\r\n" if self.conn.tls else b"X-Forwarded-Proto: http\r\n"
        )
        if self.host:
            parts.append(b"X-Forwarded-Host: " + self.host + b"\r\n")
        parts.append(b"X-Request-Id: " + self.request_id + b"\r\n")
        if self.chunked and not upgrade:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)


def connection_tokens(value: bytes) -> frozenset[bytes]:
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def error_response(status: int, message: str, request_id: bytes, keep_alive: bool) -> bytes:
    body = f"shoal: {message}\n".encode()
    return response_bytes(
        status, body, [("Content-Type", "text/plain; charset=utf-8")], request_id, keep_alive
    )


def response_bytes(
    status: int,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    request_id: bytes,
    keep_alive: bool,
) -> bytes:
    """A whole response of the balancer's own (headers are ASCII, made by the policy)."""
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error")),
            *(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers),
            b"Content-Length: %d\r\n" % len(body),
            b"X-Request-Id: " + request_id + b"\r\n" if request_id else b"",
            b"" if keep_alive else b"Connection: close\r\n",
            b"\r\n",
            body,
        )
    )


class _Reading:
    """Pause/resume reading with the state tracked, so a connection is never left paused
    once the exchange that paused it is over."""

    transport: asyncio.Transport | None
    reading_paused: bool = False

    def pause(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()


class UpstreamConn(_Reading, asyncio.Protocol):
    def __init__(self, engine: FastEngine, backend: Backend) -> None:
        self.engine = engine
        self.backend = backend
        self.key = (backend.host, backend.port)
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: ClientConn | None = None
        self.done: asyncio.Future[bool] | None = None
        self.request: Request | None = None
        self.responded = False
        self._reset_head()
        self.chunked_out = False
        self.close_delimited = False
        self.no_body = False
        self.reusable = True
        self.activity = 0.0
        self.tunnel: ClientConn | None = None
        self.closed = False
        self.out: list[bytes] = []  # response bytes for the client, flushed per chunk
        self.interim = False  # inside a 1xx response
        self.fresh = True  # no exchange completed on it yet
        self.switching = False  # a 101 to an upgrade request: a tunnel once its head is out

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            if self.tunnel.transport is not None:
                self.tunnel.transport.write(data)
            return
        if self.client is None:  # unsolicited bytes on an idle connection
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        self.activity = time.monotonic()
        client = self.client
        out = self.out
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as err:
            if self.switching:
                offset = err.args[0] if err.args else len(data)
                out.append(data[offset:])
                self._switch(client)
            else:
                self.reusable = False
                self._fail(Invalid("an unrequested protocol switch"))
                if self.transport is not None:
                    self.transport.close()
        except httptools.HttpParserError as err:
            self.reusable = False
            self._fail(Invalid(str(err)))
            if self.transport is not None:
                self.transport.close()
        finally:
            # one write (one syscall) per chunk received, however many parts it made
            if out:
                if client.transport is not None:
                    client.transport.write(out[0] if len(out) == 1 else b"".join(out))
                out.clear()

    def _switch(self, client: ClientConn) -> None:
        """The replica switched protocols: from here on both connections are a tunnel."""
        self.reusable = False
        self.tunnel = client
        client.tunnel = self
        if client.upgrade_rest and self.transport is not None:
            self.transport.write(client.upgrade_rest)
            client.upgrade_rest = b""
        self._finish(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.engine.forget(self)
        if self.tunnel is not None:
            if self.tunnel.transport is not None:
                self.tunnel.transport.close()
            self.tunnel.tunnel_done.set()
            return
        if self.done is not None and not self.done.done():
            if self.close_delimited and self.responded:
                client = self.client
                if self.chunked_out and client is not None and client.transport is not None:
                    client.transport.write(b"0\r\n\r\n")
                self._finish(False)
            else:
                self._fail(Closed(str(exc) if exc else "", new=self.fresh))

    def pause_writing(self) -> None:  # the request body outruns the replica
        client = self.client or self.tunnel
        if client is not None:
            client.pause()

    def resume_writing(self) -> None:
        client = self.client or self.tunnel
        if client is not None:
            client.resume()

    # -- exchange -----------------------------------------------------------------------

    def start(self, client: ClientConn, request: Request, head: bytes) -> asyncio.Future[bool]:
        """Send ``head`` (and the request body as it comes); the future resolves when the
        whole response was relayed (True: this connection may be reused)."""
        transport = self.transport
        self.responded = False
        if self.closed or transport is None or transport.is_closing():
            # accepted and closed at once (a proxy in front of a dead process does that)
            raise Closed("before the request was sent", new=self.fresh)
        self.client = client
        self.request = request
        self._reset_head()
        self.chunked_out = self.close_delimited = self.no_body = self.switching = False
        self.activity = time.monotonic()
        self.done = fut = asyncio.get_running_loop().create_future()
        if not request.has_body:
            transport.write(head)
        else:
            transport.write(head)
            chunked = request.chunked
            for chunk in request.body:
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            request.body = []
            request.buffered = 0
            client.resume()  # it may have paused while buffering the body
            if request.complete:
                if chunked:
                    transport.write(b"0\r\n\r\n")
            else:

                def sink(chunk: bytes) -> None:
                    if not self.closed:
                        self.activity = time.monotonic()
                        transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)

                def sink_end() -> None:
                    if chunked and not self.closed:
                        transport.write(b"0\r\n\r\n")

                request.sink = sink
                request.sink_end = sink_end
        self.engine.busy.add(self)
        return fut

    def _reset_head(self) -> None:
        self.headers: list[tuple[bytes, bytes, bytes]] = []  # name, lowercased, value
        self.reason = b""
        self.length: bytes | None = None
        self.conn_tokens: frozenset[bytes] = frozenset()
        self.chunked_in = False

    def _fail(self, err: Failure) -> None:
        self.reusable = False
        if self.done is not None and not self.done.done():
            self.done.set_exception(err)
        self._unbind()

    def _finish(self, reusable: bool) -> None:
        self.fresh = False
        if self.done is not None and not self.done.done():
            self.done.set_result(reusable and self.reusable)
        self._unbind()

    def _unbind(self) -> None:
        if self.request is not None:
            self.request.sink = None
            self.request.sink_end = None
        self.engine.busy.discard(self)
        self.client = None
        self.request = None

    def timeout(self, seconds: float) -> None:
        self._fail(ReadTimeout(seconds))
        if self.transport is not None:
            self.transport.close()

    # -- httptools callbacks --------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        self.headers.append((name, lname, value))
        if lname == b"content-length":
            self.length = value
        elif lname == b"connection":
            self.conn_tokens = connection_tokens(value)
        elif lname == b"transfer-encoding":
            self.chunked_in = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        client, request = self.client, self.request
        if client is None or request is None or client.transport is None:
            return
        status = self.parser.get_status_code()
        if status == 101 and request.upgrade:  # relayed whole: Upgrade and Connection too
            parts = [b"HTTP/1.1 101 %s\r\n" % (self.reason or b"Switching Protocols")]
            for name, lname, value in self.headers:
                if lname not in OWN_RESPONSE:
                    parts.append(name + b": " + value + b"\r\n")
            parts.append(b"X-Request-Id: " + request.request_id + b"\r\n\r\n")
            self.out.append(b"".join(parts))
            self.switching = self.responded = True
            client.status = 101
            return
        if 100 <= status < 200:  # 100 Continue and friends: pass on, a final one follows
            self.out.append(b"HTTP/1.1 %d %s\r\n\r\n" % (status, self.reason))
            self._reset_head()
            self.interim = True
            return
        length = self.length
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, self.reason or b"OK")]
        drop = HOP_OWN_RESPONSE | self.conn_tokens if self.conn_tokens else HOP_OWN_RESPONSE
        for name, lname, value in self.headers:
            if lname not in drop:
                parts.append(name + b": " + value + b"\r\n")
        parts.append(b"X-Request-Id: " + request.request_id + b"\r\n")
        if self.engine.options.expose_replica:
            parts.append(b"X-Shoal-Replica: " + self.backend.id.encode() + b"\r\n")
        self.no_body = request.method == b"HEAD" or status in (204, 304)
        if request.method == b"HEAD":
            self.reusable = False  # the parser would wait for a body that never comes
        if not self.no_body and length is None:
            if request.version == "1.1":
                self.chunked_out = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                client.keep_alive = False
            if not self.parser.should_keep_alive() and not self.chunked_in:
                self.close_delimited = True
        if not client.keep_alive or not request.keep_alive:
            client.keep_alive = False
            parts.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self.out.append(b"".join(parts))
        self.responded = True
        client.status = status
        if request.method == b"HEAD":
            self._finish(False)

    def on_body(self, body: bytes) -> None:
        if self.client is None:
            return
        if self.chunked_out:
            self.out.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.client is None or self.switching:
            return
        if self.interim:  # the end of a 1xx: the final response follows
            self.interim = False
            return
        if self.chunked_out:
            self.out.append(b"0\r\n\r\n")
        self._finish(self.parser.should_keep_alive())


class ClientConn(_Reading, asyncio.Protocol):
    def __init__(self, engine: FastEngine) -> None:
        self.engine = engine
        self.policy = engine.policy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.tls = False  # accepted on the TLS listener
        self.queue: deque[Request] = deque()
        self.current: Request | None = None
        self.task: asyncio.Task[None] | None = None
        self.keep_alive = True
        self.status = 0
        self.tunnel: UpstreamConn | None = None
        self.upgrade_rest = b""
        self.tunnel_done = asyncio.Event()
        self.wakeup: asyncio.Future[None] | None = None
        self.linger: asyncio.Future[None] | None = None
        self.idle_since = time.monotonic()
        self.closed = False
        self.in_head = False  # between the first byte of a request and its last header
        self.head_since = 0.0
        self.head_bytes = 0  # bytes received while in a head (an upper bound of its size)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        engine = self.engine
        if len(engine.clients) >= engine.options.max_connections:
            self.closed = True
            tcp.write(error_response(503, "too many connections", b"", False))
            tcp.close()
            return
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        self.tls = engine.ssl is not None
        engine.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.engine.clients.discard(self)
        self.tunnel_done.set()
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.close()
        up = self.engine.bound.get(self)
        if up is not None:  # the client left mid-exchange: that connection is spoiled
            up.reusable = False
            if up.transport is not None:
                up.transport.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            if self.tunnel.transport is not None:
                self.tunnel.transport.write(data)
            return
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
            if self.in_head:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD:
                    self._refuse_now(431, f"request head larger than {MAX_HEAD} bytes")
        except httptools.HttpParserUpgrade as err:
            offset = err.args[0] if err.args else len(data)
            self.upgrade_rest = data[offset:]
            if self.current is not None:
                self.current.complete = True
            self.pause()  # until the tunnel is up
        except httptools.HttpParserError as err:
            if isinstance(err.__context__, _HeadTooLarge):
                self._refuse_now(431, f"request head larger than {MAX_HEAD} bytes")
            else:
                self._bad_request(str(err))

    def _refuse_now(self, status: int, why: str) -> None:
        """Answer ``status`` (unless a response is under way) and close the connection."""
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            if not self.queue:
                self.transport.write(error_response(status, why, b"", False))
            self.transport.close()

    def pause_writing(self) -> None:  # the response outruns the client
        up = self.tunnel or self._bound_upstream()
        if up is not None:
            up.pause()

    def resume_writing(self) -> None:
        up = self.tunnel or self._bound_upstream()
        if up is not None:
            up.resume()

    def _bound_upstream(self) -> UpstreamConn | None:
        return self.engine.bound.get(self)

    def _bad_request(self, why: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if not self.queue:
                self.transport.write(error_response(400, f"bad request: {why}", b"", False))
            self.transport.close()

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request(self)
        self.in_head = True
        self.head_since = time.monotonic()
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        req = self.current
        assert req is not None
        req.url += url
        req.head_size += len(url)
        if req.head_size > MAX_HEAD:
            req.url = b"/"
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.current
        assert req is not None
        req.head_size += len(name) + len(value) + 4
        if req.head_size > MAX_HEAD:
            raise _HeadTooLarge
        req.headers.append((name, value))
        lname = name.lower()
        if lname == b"host":
            req.host = value
            req.hosts += 1
        elif lname == b"x-request-id":
            req.request_id = value
        elif lname == b"content-length":
            with contextlib.suppress(ValueError):
                req.content_length = int(value)
        elif lname == b"transfer-encoding":
            req.chunked = b"chunked" in value.lower()
        elif lname == b"connection":  # every Connection header counts
            req.connection = req.connection + b"," + value if req.connection else value

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        p = self.parser
        req.method = p.get_method()
        req.version = p.get_http_version()
        req.keep_alive = p.should_keep_alive()
        req.upgrade = p.should_upgrade()
        self.in_head = False
        refusal = refuse_head(req.hosts, req.connection.decode("latin-1") or None)
        if refusal is not None:
            req.refused = (400, refusal)
        self.queue.append(req)
        if len(self.queue) >= MAX_PIPELINED:
            self.pause()  # resumed as the queue is served
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._serve_queue())
        elif self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    def on_body(self, body: bytes) -> None:
        req = self.current
        assert req is not None
        if req.discard:
            return
        req.size += len(body)
        if req.size > self.policy.options.max_body:
            req.discard = True
            req.too_large = True
            up = self.engine.bound.get(self)
            if up is not None and up.request is req:
                up._fail(Failure("request body too large"))
                if up.transport is not None:
                    up.transport.close()
            return
        if req.sink is not None:
            req.sink(body)
            return
        req.body.append(body)
        req.buffered += len(body)
        if req.buffered > BODY_BUFFER:
            self.pause()  # resumed once an upstream takes the body

    def on_message_complete(self) -> None:
        req = self.current
        assert req is not None
        req.complete = True
        if req.sink_end is not None:
            req.sink_end()
        if self.linger is not None and not self.linger.done():
            self.linger.set_result(None)

    # -- serving ------------------------------------------------------------------------

    async def _serve_queue(self) -> None:
        """The connection's one serving task: requests in order, then wait for the next
        (a future per wait, not a task per request); idle connections are closed by the
        engine's sweeper."""
        loop = asyncio.get_running_loop()
        policy = self.policy
        try:
            while not self.closed:
                if not self.queue:
                    self.wakeup = loop.create_future()
                    await self.wakeup
                    self.wakeup = None
                    continue
                req = self.queue[0]
                if not req.request_id:
                    req.request_id = policy.next_request_id().encode()
                url = req.url.decode("latin-1")
                path, sep, query = url.partition("?")
                route_path = normalize_path(path)
                if route_path is None:
                    req.refused = (400, "malformed path")
                if req.refused is not None:
                    req.reply(*req.refused, close=True)
                else:
                    if route_path != path:
                        req.url = (f"{route_path}{sep}{query}").encode("latin-1")
                    host = normalize_host(req.host.decode("latin-1"))
                    await policy.serve(req, host, route_path or path)
                self.queue.popleft()
                self.resume()  # whatever paused it belonged to the exchange just done
                self.idle_since = time.monotonic()
                if not req.complete:
                    await self._linger(req)
                if not self.keep_alive or not req.keep_alive or not req.complete:
                    if self.transport is not None:
                        self.transport.close()
                    return
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("request failed")
            if self.transport is not None:
                self.transport.close()
        finally:
            self.task = None

    async def _linger(self, req: Request) -> None:
        """Answered before the request body was read (413, an early upstream answer): read
        and drop the rest for a while before closing, so the client sees the answer
        instead of a reset while it is still sending."""
        req.discard = True  # from here on, on_body drops the bytes
        req.body = []
        self.resume()
        self.linger = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                await self.linger
        self.linger = None


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the head went over ``MAX_HEAD``."""


class FastEngine:
    """Listener, upstream pools and the read-timeout sweeper."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.options = policy.options
        self.clients: set[ClientConn] = set()
        self.busy: set[UpstreamConn] = set()
        self.bound: dict[ClientConn, UpstreamConn] = {}
        self.idle: dict[tuple[str, int], list[UpstreamConn]] = {}
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: the TLS listener's context (``tls.py``), None for plain HTTP
        self.ssl: ssl.SSLContext | None = None

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
        with ``tls``, HTTPS (the handshake before any byte reaches the protocol)."""
        loop = asyncio.get_running_loop()
        self.ssl = tls
        if sock is not None:
            self.server = await loop.create_server(
                lambda: ClientConn(self), sock=sock, backlog=2048, ssl=tls
            )
        else:
            self.server = await loop.create_server(
                lambda: ClientConn(self),
                host,
                port,
                reuse_port=reuse_port or None,
                backlog=2048,
                ssl=tls,
            )
        self._sweeper = loop.create_task(self._sweep(), name="balancer-sweeper")

    async def close(self, grace: float = 10.0) -> None:
        if self.server is not None:
            self.server.close()
        busy = []
        for c in list(self.clients):  # finish what is in flight, close the idle at once
            c.keep_alive = False
            if c.queue or c.tunnel is not None:
                if c.task is not None:
                    busy.append(c.task)
            elif c.transport is not None:
                c.transport.close()
        if busy:
            await asyncio.wait(busy, timeout=grace)
        for c in list(self.clients):
            if c.transport is not None:
                c.transport.close()
        for conns in self.idle.values():
            for up in conns:
                if up.transport is not None:
                    up.transport.close()
        self.idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # -- upstream pool ------------------------------------------------------------------

    async def connect(self, backend: Backend) -> UpstreamConn:
        loop = asyncio.get_running_loop()
        timeout = self.options.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                _, up = await loop.create_connection(
                    lambda: UpstreamConn(self, backend), backend.host, backend.port
                )
        except TimeoutError as err:  # (an OSError too: first)
            raise ConnectTimeout(timeout) from err
        except OSError as err:
            raise Refused(err.strerror or str(err)) from err
        return up

    def idle_conn(self, backend: Backend) -> UpstreamConn | None:
        """A pooled keep-alive connection to ``backend``, if one is open."""
        pool = self.idle.get((backend.host, backend.port))
        while pool:
            up = pool.pop()
            if not up.closed and up.transport is not None and not up.transport.is_closing():
                up.backend = backend
                return up
        return None

    def release(self, up: UpstreamConn) -> None:
        if up.closed or not up.reusable:
            if up.transport is not None:
                up.transport.close()
            return
        up.resume()
        pool = self.idle.setdefault(up.key, [])
        if len(pool) >= IDLE_PER_BACKEND:
            if up.transport is not None:
                up.transport.close()
            return
        pool.append(up)

    def forget(self, up: UpstreamConn) -> None:
        self.busy.discard(up)
        pool = self.idle.get(up.key)
        if pool and up in pool:
            pool.remove(up)

    async def _sweep(self) -> None:
        timeout = self.options.read_timeout
        step = min(0.1, timeout / 4)
        ticks = 0
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            for up in [u for u in self.busy if now - u.activity > timeout]:
                up.timeout(timeout)
            ticks += 1
            if ticks % 5 == 0:
                head_timeout = self.options.header_timeout
                for c in [
                    c for c in self.clients if c.in_head and now - c.head_since > head_timeout
                ]:
                    c._refuse_now(408, f"request head not received within {head_timeout:g}s")
            if ticks % 20 == 0:
                for c in [
                    c
                    for c in self.clients
                    if not c.queue and c.tunnel is None and now - c.idle_since > CLIENT_IDLE_TIMEOUT
                ]:
                    if c.transport is not None:
                        c.transport.close()
