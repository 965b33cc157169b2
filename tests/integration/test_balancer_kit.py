"""Helpers for the health and balancer integration tests (no tests here).

Backends are small aiohttp servers inside the test's event loop, on 127.0.0.x; the test
plays controller and agent (and, for balancer-only tests, health) by publishing the
retained state itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from core.bus import Bus, connect_bus
from core.channels import APPS, HEALTH, NODE_INFO, NODE_REPLICAS
from core.config import BrokerURL
from core.keys import AppKey
from core.spec import AppSpec, Resources
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    NodeInfo,
    NodeReplicas,
    ReplicaHealth,
    ReplicaStatus,
)
from core.topics import Topics
from tests.support.net import free_port


@dataclass
class Backend:
    """One fake replica: an HTTP server that says who it is."""

    id: str
    host: str
    port: int = 0
    healthy: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)  # User-Agent of each /healthz
    runner: web.AppRunner | None = None
    inflight: int = 0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/echo", self.echo)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/big", self.big)
        app.router.add_get("/ws", self.ws)
        app.router.add_route("*", "/{tail:.*}", self.hello)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        self.probes.append(request.headers.get("User-Agent", ""))
        return web.Response(
            status=200 if self.healthy else 503, text="ok" if self.healthy else "no"
        )

    async def hello(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "path": request.path_qs,
                "method": request.method,
                "headers": CIMultiDict(request.headers),
            }
        )
        self.inflight += 1
        try:
            delay = float(request.query.get("sleep", "0"))
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.inflight -= 1
        return web.Response(
            text=self.id, headers={"Connection": "keep-alive, X-Private", "X-Private": "1"}
        )

    async def echo(self, request: web.Request) -> web.StreamResponse:
        """Streams the body back as it arrives, and a digest in a trailer-like final line."""
        resp = web.StreamResponse(headers={"X-Backend": self.id})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        async for chunk in request.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def upload(self, request: web.Request) -> web.Response:
        """Reads the whole body first, then answers with its size and digest."""
        h = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            size += len(chunk)
        return web.Response(text=f"{size} {h.hexdigest()}")

    async def big(self, request: web.Request) -> web.Response:
        size = int(request.query.get("mb", "1")) * 1024 * 1024
        return web.Response(body=b"x" * size, content_type="application/octet-stream")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "5"))
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(n):
            await resp.write(f"chunk {i}\n".encode())
            await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{self.id}:{msg.data}")
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def start(self) -> Backend:
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        self.port = self.port or free_port(self.host)
        await web.TCPSite(self.runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@contextlib.asynccontextmanager
async def backends(
    n: int, app: str = "web", first_host: int = 2, *, one_host: bool = False
) -> AsyncIterator[list[Backend]]:
    """``n`` backends on 127.0.0.<first_host>, .<first_host + 1>, ... (``one_host``: all on
    the first, as the replicas of one node are)."""
    started: list[Backend] = []
    try:
        for i in range(n):
            host = f"127.0.0.{first_host + (0 if one_host else i)}"
            started.append(await Backend(f"default.{app}.{i:08x}", host).start())
        yield started
    finally:
        for b in started:
            await b.stop()


def app_state(
    name: str = "web",
    *,
    replicas: int = 3,
    route: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    versions: list[tuple[int, int, int | None]] | None = None,
    autoscale: dict[str, Any] | None = None,
    namespace: str = "default",
    revision: int = 1,
    generation: int = 1,
) -> AppState:
    spec_doc: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "image": "shoal-test/echo:v1",
        "replicas": replicas,
        "ports": {"http": 8080},
        "route": route if route is not None else {"path": "/", "port": "http"},
    }
    if health is not None:
        spec_doc["health"] = health
    if autoscale is not None:
        spec_doc["autoscale"] = autoscale
    spec = AppSpec.model_validate(spec_doc)
    vs = versions or [(revision, replicas, None)]
    return AppState(
        namespace=namespace,
        name=name,
        revision=revision,
        generation=generation,
        spec=spec,
        replicas=replicas,
        versions=[AppVersion(revision=r, spec=spec, replicas=n, weight=w) for r, n, w in vs],
    )


def statuses(
    bs: Iterable[Backend],
    *,
    phase: str = "running",
    node: str = "n1",
    app: str = "web",
    revision: int = 1,
    phases: dict[str, str] | None = None,
    revisions: dict[str, int] | None = None,
    started_at: float = 1000.0,
) -> NodeReplicas:
    return NodeReplicas(
        node=node,
        replicas=[
            ReplicaStatus(
                id=b.id,
                namespace="default",
                app=app,
                revision=(revisions or {}).get(b.id, revision),
                node=node,
                phase=(phases or {}).get(b.id, phase),
                endpoints={"http": b.endpoint},
                started_at=started_at,
            )
            for b in bs
        ],
        ts=time.time(),
    )


def lone_health(app: str, replica: str, endpoint: str) -> AppHealth:
    """One ready replica at an arbitrary endpoint (a port nothing or garbage listens on)."""
    return AppHealth(
        namespace="default",
        name=app,
        replicas=[ReplicaHealth(id=replica, revision=1, node="n1", endpoint=endpoint, ready=True)],
        ts=time.time(),
    )


def health_of(
    bs: Iterable[Backend],
    app: str = "web",
    *,
    ready: Iterable[str] | None = None,
    terminating: Iterable[str] = (),
    revisions: dict[str, int] | None = None,
) -> AppHealth:
    bs = list(bs)
    ready_ids = set(ready) if ready is not None else {b.id for b in bs}
    term = set(terminating)
    return AppHealth(
        namespace="default",
        name=app,
        replicas=[
            ReplicaHealth(
                id=b.id,
                revision=(revisions or {}).get(b.id, 1),
                node="n1",
                endpoint=b.endpoint,
                ready=b.id in ready_ids and b.id not in term,
                terminating=b.id in term,
            )
            for b in bs
        ],
        ts=time.time(),
    )


class Publisher:
    """Plays the writers the test needs (controller, agent, health)."""

    def __init__(self, broker_url: str, prefix: str) -> None:
        self.bus: Bus = connect_bus(
            BrokerURL.parse(broker_url), Topics(prefix), client_id=f"pub-{prefix}"
        )
        self._task: asyncio.Task[None] | None = None
        self._addresses: dict[str, str] = {}

    async def __aenter__(self) -> Publisher:
        self._task = asyncio.create_task(self.bus.run())
        await self.bus.wait_connected(10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def app(self, state: AppState) -> None:
        await self.bus.publish(APPS, state)

    async def delete_app(self, name: str, namespace: str = "default") -> None:
        await self.bus.clear(APPS, AppKey(namespace, name))

    async def replicas(self, nr: NodeReplicas) -> None:
        """As an agent does: its node's info first, advertising the address its replicas'
        endpoints are on (health routes no endpoint off it; the first replica's host)."""
        hosts = [e.rpartition(":")[0] for r in nr.replicas for e in r.endpoints.values()]
        if hosts and self._addresses.get(nr.node) != hosts[0]:
            info = NodeInfo(node=nr.node, address=hosts[0], capacity=Resources())
            await self.bus.publish(NODE_INFO, info)
            self._addresses[nr.node] = hosts[0]
        await self.bus.publish(NODE_REPLICAS, nr)

    async def health(self, h: AppHealth) -> None:
        await self.bus.publish(HEALTH, h)


async def get(
    session: aiohttp.ClientSession, url: str, **kw: Any
) -> tuple[int, str, CIMultiDict[str]]:
    async with session.get(url, **kw) as r:
        return r.status, await r.text(), CIMultiDict(r.headers)


async def wait_until(predicate: Any, timeout: float = 10.0, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s")
        await asyncio.sleep(0.05)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
