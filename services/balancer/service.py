"""The balancer's I/O shell: bus state in, a route table out, two HTTP listeners.

Inputs (retained, kept in views): ``APPS`` (route, algorithm, desired replicas, version
weights) and ``HEALTH`` (ready replicas and their endpoints). Every change marks its app
dirty; a ``Reconciler`` rebuilds the routes of the dirty apps and swaps in a new
immutable ``RouteTable`` (bursts of messages collapse into one rebuild).

Outputs: user traffic on ``--listen`` (the engine: ``fast.py`` or ``proxy.py``, deciding
through ``policy.py``); ``/metrics`` (Prometheus), ``/routes`` and ``/healthz`` on
``--admin``; ``LB_METRICS`` every second (QoS 0); ``WAKE`` while requests are held for
an app scaled to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from core.channels import ACME_CHALLENGES, APPS, HEALTH, LB_METRICS, NODE_INFO, WAKE
from core.config import ServiceConfig
from core.keys import AppKey
from core.runner import Reconciler
from core.service import Service
from core.spec import REGION_LABEL
from core.state import AcmeChallenge, AppHealth, AppState, NodeInfo, WakeUp
from core.view import View
from services.balancer import admin_auth
from services.balancer.acme_manager import AcmeManager, AcmeSettings
from services.balancer.fast import FastEngine
from services.balancer.policy import Policy, ProxyOptions
from services.balancer.prom import LbCollector
from services.balancer.proxy import AiohttpEngine
from services.balancer.routes import AppRoute, RouteTable, app_route
from services.balancer.tcp_relay import TcpOptions, TcpRelay
from services.balancer.tcp_routes import TcpAppRoute, TcpTable, tcp_app_routes
from services.balancer.tcp_stats import TcpCollector, TcpStats
from services.balancer.tls import Certificates


@dataclass(frozen=True, slots=True)
class BalancerOptions:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    admin: tuple[str, int] | None = None
    #: HTTPS for routes with ``tls`` (``tls.py``); None: no TLS listener
    tls_listen: tuple[str, int] | None = None
    reuse_port: bool = False
    metrics_interval: float = 1.0
    engine: str = "fast"  # "fast" (httptools protocols) or "aiohttp"
    #: this balancer's region: its replicas first, the others' when none is ready
    #: (``locality.py``); None: every ready replica alike
    region: str | None = None
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    #: ``Authorization: Bearer`` token the admin endpoint asks for (``admin_auth.py``)
    admin_token: str | None = field(default=None, repr=False)
    #: certificates by ACME for routes with ``tls: {acme: true}`` (needs ``tls_listen``)
    acme: AcmeSettings | None = None


@dataclass(frozen=True, slots=True)
class Listeners:
    """Sockets a worker inherited from the master (``master.py``): they outlive it."""

    listen: socket.socket
    admin: socket.socket | None = None
    slot: int = 0
    tls: socket.socket | None = None


class BalancerService(Service):
    name = "balancer"
    apps: View[AppKey, AppState]
    health: View[AppKey, AppHealth]
    challenges: View[str, AcmeChallenge]

    def __init__(
        self,
        config: ServiceConfig,
        options: BalancerOptions | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        super().__init__(config)
        self.options = options or BalancerOptions()
        self.listeners = listeners  # None: bind ``options.listen``/``admin`` ourselves
        self.routes: dict[AppKey, AppRoute] = {}
        #: node -> its ``region`` label (only with ``--region``)
        self.node_regions: dict[str, str] = {}
        self._dirty: set[AppKey] = set()
        self._synced = asyncio.Event()
        self._woken: dict[AppKey, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.policy = Policy(self.options.proxy, instance=self.instance, on_hold=self._on_hold)
        self.runner: Reconciler[str] = Reconciler(
            "routes", self._rebuild, keys=lambda: ["table"], resync=30.0
        )
        self.certificates = Certificates(self.bus, self.instance, self.log)
        self.tls_runner: Reconciler[str] = Reconciler(
            "certificates", self._load_certificates, keys=lambda: ["certs"], resync=30.0
        )
        if self.options.tls_listen is not None:
            self.policy.https_port = self.options.tls_listen[1]
        acme = self.options.acme
        if acme is not None and listeners is not None and listeners.slot != 0:
            acme = dataclasses.replace(acme, order=False)  # the first worker orders
        self.acme = AcmeManager(
            acme,
            self.bus,
            self.instance,
            self.log,
            self.emit,
            self.certificates,
            self.policy,
        )
        self.acme_runner: Reconciler[str] = Reconciler(
            "acme", self._sync_acme, keys=lambda: ["acme"], resync=30.0
        )
        self.metrics.register(LbCollector(self.policy))
        self.tcp_routes: dict[AppKey, list[TcpAppRoute]] = {}
        self.tcp_stats = TcpStats()
        proxy = self.options.proxy
        self.tcp = TcpRelay(
            self.options.listen[0],
            self.tcp_stats,
            TcpOptions(
                connect_timeout=proxy.connect_timeout,
                retries=proxy.retries,
                eject_seconds=proxy.eject_seconds,
            ),
        )
        self._tcp_pending = False  # a listen port could not be bound: try again
        self.metrics.register(TcpCollector(self.tcp_stats))
        self.bus.on_connect(self._after_connect)

    # -- inputs ------------------------------------------------------------------------

    async def setup(self) -> None:
        self.apps = await self.bus.view(APPS, on_change=self._app_changed)
        self.health = await self.bus.view(HEALTH, on_change=self._on_health)
        # every instance answers every instance's HTTP-01 challenges (``acme_manager.py``)
        self.challenges = await self.bus.view(ACME_CHALLENGES, on_change=self.acme.on_challenge)
        if self.options.region is not None:
            await self.bus.subscribe(NODE_INFO, self._on_node)

    async def _on_node(self, node: str, info: NodeInfo | None) -> None:
        """A node's region label: when it changes (a node joins, leaves, or is
        relabelled), every route is rebuilt; heartbeats change nothing."""
        region = info.labels.get(REGION_LABEL) if info is not None else None
        if region == self.node_regions.get(node):
            return
        if region is None:
            del self.node_regions[node]
        else:
            self.node_regions[node] = region
        self._dirty.update(self.apps.keys())
        self.runner.mark("table")

    def _changed(self, key: AppKey, _: object) -> None:
        self._dirty.add(key)
        self.runner.mark("table")

    def _app_changed(self, key: AppKey, app: object) -> None:
        self._changed(key, app)
        if self.options.tls_listen is not None:
            self.tls_runner.mark("certs")
            self.acme_runner.mark("acme")

    async def _sync_acme(self, _: str) -> float | None:
        """ACME certificates in line with the routes; again when one is due."""
        return await self.acme.sync(self.apps.values())

    async def _load_certificates(self, _: str) -> float | None:
        """Route certificates in line with the apps; again in 2 s when one failed."""
        return None if await self.certificates.sync(self.apps.values()) else 2.0

    def _on_health(self, key: AppKey, health: AppHealth | None) -> None:
        if health is not None:
            for rid in self.policy.ejected.readmit(health.replicas):
                self.log.info("replica readmitted: ready again after its ejection", replica=rid)
            self.tcp.ejected.readmit(health.replicas)
        self._changed(key, health)

    async def _after_connect(self) -> None:
        if not await self.bus.settle():
            return  # the connection dropped: the next connect runs this hook again
        self._synced.set()

    async def _rebuild(self, _: str) -> float | None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            app = self.apps.get(key)
            health = self.health.get(key)
            route = (
                app_route(app, health, self.node_regions, self.options.region)
                if app is not None
                else None
            )
            if route is None:
                self.routes.pop(key, None)
            else:
                self.routes[key] = route
            tcp = tcp_app_routes(app, health) if app is not None else []
            if tcp:
                self.tcp_routes[key] = tcp
            else:
                self.tcp_routes.pop(key, None)
        if dirty or self._tcp_pending:
            table = TcpTable.build(r for rs in self.tcp_routes.values() for r in rs)
            self._tcp_pending = not await self.tcp.apply(table)
        if dirty:
            self.policy.set_table(RouteTable(self.routes.values()))
            self.log.debug(
                "route table rebuilt",
                apps=len(self.routes),
                changed=[str(k) for k in sorted(dirty)[:10]],
            )
        return 2.0 if self._tcp_pending else None

    # -- scale from zero ---------------------------------------------------------------

    def _on_hold(self, route: AppRoute) -> None:
        last = self._woken.get(route.key, 0.0)
        if time.monotonic() - last >= 1.0:
            self._woken[route.key] = time.monotonic()
            self._spawn(self._publish_wake(route.key))

    async def _publish_wake(self, app: AppKey) -> None:
        held = self.policy.stats.app(app).held
        try:
            await self.bus.publish(
                WAKE, WakeUp(namespace=app.namespace, name=app.name, held=held), timeout=2
            )
            self.log.info("wake-up requested", app=str(app), held=held)
        except Exception as err:
            self.log.warning("wake-up not published", app=str(app), error=str(err))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- periodic metrics --------------------------------------------------------------

    async def _metrics_loop(self) -> None:
        interval = self.options.metrics_interval
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval - (time.monotonic() - last) % interval)
            now = time.monotonic()
            window, last = now - last, now
            policy = self.policy
            policy.ejected.purge()
            snapshot = policy.stats.snapshot(self.instance, window, time.time(), policy.inflight)
            tcp = self.tcp_stats.snapshot()
            if tcp:
                snapshot = snapshot.model_copy(update={"tcp": tcp})
            for key, s in policy.stats.apps.items():
                route = self.routes.get(key)
                if s.held > 0 and route is not None:
                    self._on_hold(route)
            if not self.bus.connected:
                continue
            try:
                await self.bus.publish(LB_METRICS, snapshot, timeout=1)
            except Exception as err:
                self.log.debug("metrics not published", error=str(err))

    # -- HTTP --------------------------------------------------------------------------

    def route_table(self) -> dict[str, Any]:
        """The routes as ``/routes`` shows them, by ``ns/name``."""
        ejected = self.policy.ejected
        return {
            str(key): {
                "host": r.host,
                "path": r.path,
                "algorithm": r.algorithm,
                "desired": r.desired,
                "backends": [
                    {"id": b.id, "endpoint": f"{b.host}:{b.port}", "weight": b.weight}
                    for b in r.backends
                ],
                "remote": [
                    {"id": b.id, "endpoint": f"{b.host}:{b.port}", "weight": b.weight}
                    for b in r.remote
                ],
                "ejected": [b.id for b in (*r.backends, *r.remote) if b.id in ejected],
            }
            for key, r in self.routes.items()
        }

    def tcp_route_table(self) -> dict[str, Any]:
        """The TCP routes as ``/routes/tcp`` shows them, by listen port."""
        table = self.tcp.table
        return {
            str(port): {
                "app": str(r.key),
                "algorithm": r.algorithm,
                "desired": r.desired,
                "listening": port in self.tcp.servers,
                "error": self.tcp.bind_errors.get(port, ""),
                "backends": [{"id": b.id, "endpoint": f"{b.host}:{b.port}"} for b in r.backends],
                "ejected": [b.id for b in r.backends if b.id in self.tcp.ejected],
            }
            for port, r in sorted(table.by_port.items())
        }

    def admin_app(self) -> web.Application:
        token = self.options.admin_token

        @web.middleware
        async def authorised(request: web.Request, handler: Handler) -> web.StreamResponse:
            if admin_auth.allowed(request.path, request.headers.get("Authorization"), token):
                return await handler(request)
            return web.json_response(
                {"error": "the admin endpoint needs Authorization: Bearer <admin token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="shoal-balancer"'},
            )

        app = web.Application(middlewares=[authorised])

        async def metrics(_: web.Request) -> web.Response:
            body = self.metrics.exposition()
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response(
                {
                    "ok": True,
                    "bus": self.bus.connected,
                    "apps": len(self.routes),
                    "pid": os.getpid(),
                    "master": os.getppid() if self.listeners is not None else None,
                    "slot": self.listeners.slot if self.listeners is not None else 0,
                }
            )

        async def routes(_: web.Request) -> web.Response:
            return web.json_response(self.route_table())

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)

        async def tcp_routes(_: web.Request) -> web.Response:
            return web.json_response(self.tcp_route_table())

        app.router.add_get("/routes", routes)
        app.router.add_get("/routes/tcp", tcp_routes)
        return app

    async def main(self) -> None:
        # Serve with the retained state already in the table when the broker answers.
        runner_task = asyncio.create_task(self.runner.run(), name="balancer-routes")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._synced.wait()
        host, port = self.options.listen
        fast = self.options.engine == "fast"
        engine = FastEngine(self.policy) if fast else AiohttpEngine(self.policy)
        inherited = self.listeners
        await engine.start(
            host,
            port,
            reuse_port=self.options.reuse_port,
            sock=inherited.listen if inherited is not None else None,
        )
        tls_engine: FastEngine | AiohttpEngine | None = None
        tls_task: asyncio.Task[None] | None = None
        acme_task: asyncio.Task[None] | None = None
        if self.options.tls_listen is not None:
            tls_engine = FastEngine(self.policy) if fast else AiohttpEngine(self.policy)
            thost, tport = self.options.tls_listen
            await tls_engine.start(
                thost,
                tport,
                reuse_port=self.options.reuse_port,
                sock=inherited.tls if inherited is not None else None,
                tls=self.certificates.listener,
            )
            self.tls_runner.mark("certs")
            tls_task = asyncio.create_task(self.tls_runner.run(), name="balancer-certificates")
            self.acme_runner.mark("acme")
            acme_task = asyncio.create_task(self.acme_runner.run(), name="balancer-acme")
        admin_runner: web.AppRunner | None = None
        if self.options.admin is not None:
            admin_runner = web.AppRunner(self.admin_app(), access_log=None, handle_signals=False)
            await admin_runner.setup()
            ahost, aport = self.options.admin
            site: web.BaseSite
            if inherited is not None and inherited.admin is not None:
                site = web.SockSite(admin_runner, inherited.admin, backlog=128)
            else:
                site = web.TCPSite(
                    admin_runner, ahost, aport, reuse_port=self.options.reuse_port or None
                )
            await site.start()
        self.log.info(
            "balancer listening",
            engine=self.options.engine,
            listen=f"{host}:{port}",
            tls_listen=(
                f"{self.options.tls_listen[0]}:{self.options.tls_listen[1]}"
                if self.options.tls_listen
                else ""
            ),
            admin=f"{self.options.admin[0]}:{self.options.admin[1]}" if self.options.admin else "",
        )
        metrics_task = asyncio.create_task(self._metrics_loop(), name="balancer-metrics")
        try:
            await runner_task
        finally:
            metrics_task.cancel()
            runner_task.cancel()
            for task in (metrics_task, runner_task):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # in-flight requests finish (up to the shutdown timeout), new ones are refused
            await asyncio.gather(engine.close(), self.tcp.close())
            for cert_task in (tls_task, acme_task):
                if cert_task is not None:
                    cert_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await cert_task
            if tls_engine is not None:
                await tls_engine.close()
            if admin_runner is not None:
                await admin_runner.cleanup()
