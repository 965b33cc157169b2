"""The balancer's I/O shell: bus state in, a route table out, two HTTP listeners.

Inputs (retained): ``apps/+/+`` (route, algorithm, desired replicas, version weights) and
``health/+/+`` (ready replicas and their endpoints). Every change marks the table dirty;
a ``Reconciler`` rebuilds the routes of the changed apps and swaps in a new immutable
``RouteTable`` (bursts of messages collapse into one rebuild).

Outputs: user traffic on ``--listen``; ``/metrics`` (Prometheus), ``/routes`` and
``/healthz`` on ``--admin``; ``LbMetrics`` on ``metrics/lb/<instance>`` every second
(QoS 0); ``WakeUp`` on ``wake/<ns>/<app>`` while requests are held for an app scaled to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from core.codec import Envelope
from core.config import ServiceConfig
from core.errors import TopicError
from core.runner import Reconciler
from core.service import Service
from core.state import AppHealth, AppState, WakeUp
from services.balancer.fast import FastEngine
from services.balancer.prom import LbCollector
from services.balancer.proxy import Proxy, ProxyOptions
from services.balancer.routes import AppRoute, RouteTable, app_route


@dataclass(frozen=True, slots=True)
class BalancerOptions:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    admin: tuple[str, int] | None = None
    reuse_port: bool = False
    metrics_interval: float = 1.0
    engine: str = "fast"  # "fast" (httptools protocols) or "aiohttp"
    proxy: ProxyOptions = field(default_factory=ProxyOptions)


class BalancerService(Service):
    name = "balancer"

    def __init__(self, config: ServiceConfig, options: BalancerOptions | None = None) -> None:
        super().__init__(config)
        self.options = options or BalancerOptions()
        self.apps: dict[str, AppState] = {}
        self.health: dict[str, AppHealth] = {}
        self.routes: dict[str, AppRoute] = {}
        self._dirty: set[str] = set()
        self._synced = asyncio.Event()
        self._woken: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.proxy = Proxy(self.options.proxy, instance=self.instance, on_hold=self._on_hold)
        self.runner: Reconciler[str] = Reconciler(
            "routes", self._rebuild, keys=lambda: ["table"], resync=30.0
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LbCollector(self.proxy))
        self.bus.on_connect(self._after_connect)

    # -- inputs ------------------------------------------------------------------------

    async def setup(self) -> None:
        await self.bus.subscribe(self.topics.all_apps, self._on_app)
        await self.bus.subscribe(self.topics.all_health, self._on_health)

    def _key(self, topic: str) -> tuple[str, str, str] | None:
        try:
            ns, name = self.topics.app_of(topic)
        except TopicError:
            return None
        return ns, name, f"{ns}/{name}"

    def _on_app(self, topic: str, env: Envelope | None) -> None:
        key = self.track_app(topic, env, self.apps)
        if key is not None:
            self._dirty.add(key)
            self.runner.mark("table")

    def _on_health(self, topic: str, env: Envelope | None) -> None:
        parsed = self._key(topic)
        if parsed is None:
            return
        _, _, key = parsed
        if env is None:
            self.health.pop(key, None)
        else:
            health = self.read(topic, env, AppHealth)
            if health is None:
                return
            self.health[key] = health
            for rid in self.proxy.ejected.readmit(health.replicas):
                self.log.info("replica readmitted: ready again after its ejection", replica=rid)
        self._dirty.add(key)
        self.runner.mark("table")

    async def _after_connect(self) -> None:
        if not await self.bus.settle():
            return  # the connection dropped: the next connect runs this hook again
        self._synced.set()

    async def _rebuild(self, _: str) -> float | None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            app = self.apps.get(key)
            route = app_route(app, self.health.get(key)) if app is not None else None
            if route is None:
                self.routes.pop(key, None)
            else:
                self.routes[key] = route
        if dirty:
            self.proxy.set_table(RouteTable(self.routes.values()))
            self.log.debug(
                "route table rebuilt",
                apps=len(self.routes),
                changed=sorted(dirty)[:10],
            )
        return None

    # -- scale from zero ---------------------------------------------------------------

    def _on_hold(self, route: AppRoute) -> None:
        last = self._woken.get(route.key, 0.0)
        if time.monotonic() - last >= 1.0:
            self._woken[route.key] = time.monotonic()
            self._spawn(self._publish_wake(route.namespace, route.name))

    async def _publish_wake(self, namespace: str, name: str) -> None:
        held = self.proxy.stats.app(f"{namespace}/{name}").held
        try:
            await self.bus.publish(
                self.topics.wake(namespace, name),
                "wake",
                WakeUp(namespace=namespace, name=name, held=held),
                timeout=2,
            )
            self.log.info("wake-up requested", app=f"{namespace}/{name}", held=held)
        except Exception as err:
            self.log.warning("wake-up not published", app=f"{namespace}/{name}", error=str(err))

    def _spawn(self, coro: Any) -> None:
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
            self.proxy.ejected.purge()
            snapshot = self.proxy.stats.snapshot(
                self.instance, window, time.time(), self.proxy.inflight
            )
            for key, s in self.proxy.stats.apps.items():
                if s.held > 0 and key in self.routes:
                    route = self.routes[key]
                    self._on_hold(route)
            if not self.bus.connected:
                continue
            try:
                await self.bus.publish(
                    self.topics.metrics_lb(self.instance),
                    "lb_metrics",
                    snapshot,
                    qos=0,
                    timeout=1,
                )
            except Exception as err:
                self.log.debug("metrics not published", error=str(err))

    # -- HTTP --------------------------------------------------------------------------

    def admin_app(self) -> web.Application:
        app = web.Application()

        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.registry)
            return web.Response(body=body, content_type="text/plain", charset="utf-8")

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response(
                {"ok": True, "bus": self.bus.connected, "apps": len(self.routes)}
            )

        async def routes(_: web.Request) -> web.Response:
            return web.json_response(
                {
                    key: {
                        "host": r.host,
                        "path": r.path,
                        "algorithm": r.algorithm,
                        "desired": r.desired,
                        "backends": [
                            {"id": b.id, "endpoint": f"{b.host}:{b.port}", "weight": b.weight}
                            for b in r.backends
                        ],
                        "ejected": [b.id for b in r.backends if b.id in self.proxy.ejected],
                    }
                    for key, r in self.routes.items()
                }
            )

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/routes", routes)
        return app

    async def main(self) -> None:
        # Serve with the retained state already in the table when the broker answers.
        runner_task = asyncio.create_task(self.runner.run(), name="balancer-routes")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 5)
        host, port = self.options.listen
        runner: web.ServerRunner | None = None
        engine: FastEngine | None = None
        if self.options.engine == "fast":
            engine = FastEngine(self.proxy)
            await engine.start(host, port, reuse_port=self.options.reuse_port)
        else:
            await self.proxy.start()
            server = web.Server(self.proxy.handle, access_log=None)
            runner = web.ServerRunner(server, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(
                runner, host, port, reuse_port=self.options.reuse_port or None, backlog=1024
            ).start()
        admin_runner: web.AppRunner | None = None
        if self.options.admin is not None:
            admin_runner = web.AppRunner(self.admin_app(), access_log=None, handle_signals=False)
            await admin_runner.setup()
            ahost, aport = self.options.admin
            await web.TCPSite(
                admin_runner, ahost, aport, reuse_port=self.options.reuse_port or None
            ).start()
        self.log.info(
            "balancer listening",
            engine=self.options.engine,
            listen=f"{host}:{port}",
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
            if engine is not None:
                await engine.close()
            if runner is not None:
                await runner.cleanup()
            if admin_runner is not None:
                await admin_runner.cleanup()
            await self.proxy.close()
