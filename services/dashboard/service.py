"""The dashboard service: retained views in, server-sent events and commands out.

It keeps a ``View`` of every retained channel a page shows, the balancer's request figures
as a five-minute series per app, and the recent events; every change marks the state dirty
and at most every ``PUSH_INTERVAL`` seconds one ``state`` message goes to every open page
(``GET /api/stream``, server-sent events). Actions (``POST /api/action``) are checked
against the dashboard's role (``authz``), then sent as the same bus command the CLI sends;
the page shows the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from core import __version__
from core.channels import (
    APPS,
    EVENTS,
    EVENTS_QUERY,
    HEALTH,
    HISTORY,
    LB_METRICS,
    LOGS_REQUEST,
    LOGS_STREAM,
    NODE_ASSIGN,
    NODE_CORDON,
    NODE_INFO,
    NODE_METRICS,
    NODE_REPLICAS,
    PRESENCE,
    SCALER_STATUS,
    SCHEDULER_STATUS,
)
from core.codec import Envelope
from core.commands import EventList, EventsQuery, History, HistoryQuery, Reply
from core.config import ServiceConfig
from core.errors import ShoalError
from core.keys import AppKey
from core.service import Service
from core.state import Event, LbMetrics, LogChunk, LogsRequest, NodeMetrics
from services.dashboard import actions, authz, model, sd
from services.dashboard.events import EventLog

STATIC = Path(__file__).with_name("static")
#: Coalescing of state pushes: a burst of bus changes costs one message per page, and a
#: page gets at most four a second (well within "on screen within 2 s").
PUSH_INTERVAL = 0.25
#: Messages queued for one page before it is dropped as too slow (it reconnects).
CLIENT_QUEUE = 256
LOG_TAIL = 200


@dataclass(frozen=True)
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    role: authz.Role = field(default_factory=authz.Role)


def sse(kind: str, data: Any) -> bytes:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class DashboardService(Service):
    name = "dashboard"

    def __init__(self, config: ServiceConfig, settings: DashboardSettings | None = None) -> None:
        super().__init__(config)
        self.settings = settings or DashboardSettings()
        self.cluster = model.Cluster()
        self.series = model.Series()
        self.events = EventLog()
        self.usage: dict[str, NodeMetrics] = {}
        self.clients: set[asyncio.Queue[bytes]] = set()
        self._dirty = asyncio.Event()
        self._logs: dict[str, asyncio.Queue[LogChunk]] = {}
        self.pushes = 0
        self.port = self.settings.port

    # -- bus ------------------------------------------------------------------------

    async def setup(self) -> None:
        def changed(_key: object, _value: object) -> None:
            self._dirty.set()

        bus = self.bus
        self.cluster = model.Cluster(
            apps=await bus.view(APPS, on_change=changed),
            health=await bus.view(HEALTH, on_change=changed),
            placement=await bus.view(SCHEDULER_STATUS, on_change=changed),
            scaling=await bus.view(SCALER_STATUS, on_change=changed),
            nodes=await bus.view(NODE_INFO, on_change=changed),
            observed=await bus.view(NODE_REPLICAS, on_change=changed),
            assigns=await bus.view(NODE_ASSIGN, on_change=changed),
            cordons=await bus.view(NODE_CORDON, on_change=changed),
            presence=await bus.view(PRESENCE, on_change=changed),
            usage=self.usage,
        )
        await bus.subscribe(LB_METRICS, self._on_lb_metrics)
        await bus.subscribe(NODE_METRICS, self._on_node_metrics)
        await bus.subscribe(EVENTS, self._on_event)
        await bus.answer(EVENTS_QUERY, self._on_events_query)
        # One subscription for every log request (the bus has no unsubscribe); chunks of
        # requests that are not this dashboard's are dropped.
        await bus.subscribe(LOGS_STREAM, self._on_log_chunk)

    def _on_lb_metrics(self, _instance: str, metrics: LbMetrics | None) -> None:
        if metrics is not None:
            self.series.record(metrics)

    def _on_node_metrics(self, node: str, metrics: NodeMetrics | None) -> None:
        if metrics is not None:
            self.usage[node] = metrics
            self._dirty.set()

    def _on_event(self, _kind: str, event: Event | None) -> None:
        if event is not None:
            kept = self.events.add(event, time.time())
            self.broadcast(sse("event", kept.model_dump(mode="json")))

    async def _on_events_query(self, query: EventsQuery, _env: Envelope) -> EventList:
        events = self.events.recent(query.namespace, query.app, query.limit)
        return EventList(events=events, kept=self.events.size)

    def events_json(self, *args: Any) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json") for e in self.events.recent(*args)]

    def _on_log_chunk(self, request: str, chunk: LogChunk | None) -> None:
        queue = self._logs.get(request)
        if queue is not None and chunk is not None:
            queue.put_nowait(chunk)

    # -- pushing to pages --------------------------------------------------------------

    def broadcast(self, message: bytes) -> None:
        for queue in list(self.clients):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.clients.discard(queue)  # too slow: its stream ends, the page reconnects
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(b"")

    def state_message(self) -> bytes:
        return sse("state", {"ts": round(time.time(), 3), **model.overview(self.cluster)})

    def series_message(self) -> bytes:
        return sse("series", {"ts": round(time.time(), 3), "apps": self.series.as_json()})

    async def _push_loop(self) -> None:
        last: dict[str, Any] | None = None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.clients:
                view = model.overview(self.cluster)
                if view != last:  # a heartbeat or a timestamp alone changes nothing shown
                    self.broadcast(sse("state", {"ts": round(time.time(), 3), **view}))
                    self.pushes += 1
                    last = view
            else:
                last = None
            await asyncio.sleep(PUSH_INTERVAL)

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.series.sample(time.time(), {str(k) for k in self.cluster.apps})
            if self.clients:
                self.broadcast(self.series_message())

    async def main(self) -> None:
        runner = web.AppRunner(self.web_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        await site.start()
        for sock in getattr(site._server, "sockets", None) or []:
            self.port = sock.getsockname()[1]
            break
        self.log.info(
            "dashboard listening",
            url=f"http://{self.settings.host}:{self.port}/",
            role=self.settings.role.describe(),
        )
        try:
            await asyncio.gather(self._push_loop(), self._sample_loop())
        finally:
            for queue in list(self.clients):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(b"")
            await runner.cleanup()

    # -- HTTP -------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/events", self.recent_events)
        app.router.add_get("/api/app/{namespace}/{name}/history", self.history)
        app.router.add_get("/api/app/{namespace}/{name}/logs", self.logs)
        app.router.add_post("/api/action", self.action)
        app.router.add_get("/sd/prometheus", self.prometheus_sd)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_static("/static/", STATIC, show_index=False)
        return app

    async def index(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": self.bus.connected, "version": __version__})

    def hello(self) -> dict[str, Any]:
        return {
            "prefix": self.config.prefix,
            "instance": self.instance,
            "version": __version__,
            "role": self.settings.role.as_json(),
        }

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue(CLIENT_QUEUE)
        await response.write(sse("hello", self.hello()))
        await response.write(self.state_message())
        await response.write(self.series_message())
        await response.write(sse("events", self.events_json()))
        self.clients.add(queue)
        try:
            while True:
                try:
                    async with asyncio.timeout(15):
                        message = await queue.get()
                except TimeoutError:
                    message = b": keep-alive\n\n"
                if not message:
                    break
                await response.write(message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(queue)
        return response

    async def state(self, _: web.Request) -> web.Response:
        return web.json_response(
            {**self.hello(), **model.overview(self.cluster), "series": self.series.as_json()}
        )

    async def recent_events(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "0")) or None
        except ValueError:
            return web.json_response({"error": "limit must be a number"}, status=400)
        return web.json_response(
            self.events_json(q.get("namespace") or None, q.get("app") or None, limit)
        )

    async def prometheus_sd(self, _: web.Request) -> web.Response:
        return web.json_response(sd.targets(self.cluster.presence))

    async def history(self, request: web.Request) -> web.Response:
        key = AppKey(request.match_info["namespace"], request.match_info["name"])
        try:
            answer = await self.bus.request(
                HISTORY, HistoryQuery(namespace=key.namespace, name=key.name), timeout=5
            )
        except ShoalError as err:
            return web.json_response({"error": f"history of {key}: {err}"}, status=504)
        if isinstance(answer, Reply):
            return web.json_response({"error": "; ".join(answer.errors)}, status=404)
        assert isinstance(answer, History)
        return web.json_response(answer.model_dump(mode="json"))

    async def logs(self, request: web.Request) -> web.Response:
        """The last lines of every running replica of one app (``shoal logs --tail``)."""
        key = AppKey(request.match_info["namespace"], request.match_info["name"])
        try:
            tail = min(max(int(request.query.get("tail", LOG_TAIL)), 1), 2000)
        except ValueError:
            return web.json_response({"error": "tail must be a number"}, status=400)
        expected = {
            r.id
            for report in self.cluster.observed.values()
            for r in report.replicas
            if AppKey(r.namespace, r.app) == key and r.container_id
        }
        if not expected:
            return web.json_response({"replicas": {}, "missing": [], "errors": {}})
        request_id = uuid.uuid4().hex
        queue: asyncio.Queue[LogChunk] = asyncio.Queue()
        self._logs[request_id] = queue
        lines: dict[str, list[str]] = {r: [] for r in sorted(expected)}
        errors: dict[str, str] = {}
        pending = set(expected)
        try:
            await self.bus.publish(
                LOGS_REQUEST,
                LogsRequest(id=request_id, namespace=key.namespace, app=key.name, tail=tail),
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while pending:
                        chunk = await queue.get()
                        lines.setdefault(chunk.replica, []).extend(chunk.lines)
                        if chunk.error:
                            errors[chunk.replica] = chunk.error
                        if chunk.eof:
                            pending.discard(chunk.replica)
        except ShoalError as err:
            return web.json_response({"error": f"logs of {key}: {err}"}, status=504)
        finally:
            self._logs.pop(request_id, None)
        return web.json_response(
            {
                "replicas": {r: v[-tail:] for r, v in lines.items()},
                "missing": sorted(pending),
                "errors": errors,
            }
        )

    async def action(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            return web.json_response(
                {"ok": False, "message": "refused: the request comes from another site"},
                status=403,
            )
        try:
            data = await request.json()
        except ValueError:
            return web.json_response(
                {"ok": False, "message": "an action is a JSON object"}, status=400
            )
        try:
            act = actions.parse(data)
        except actions.ActionError as err:
            return web.json_response({"ok": False, "message": str(err), "errors": []}, status=400)
        refused = authz.refusal(self.settings.role, act.name, act.namespace)
        if refused is not None:
            self.log.info("action refused", action=act.name, target=act.target, why=refused)
            # 200: the page asked and got an answer (a refusal is not a failed request).
            return web.json_response(
                {"ok": False, "refused": True, "message": refused, "errors": []}
            )
        try:
            reply = await self.bus.request(act.command, act.body, timeout=10)
        except ShoalError as err:
            return web.json_response(
                {
                    "ok": False,
                    "message": f"{act.name} of {act.target}: {err}"
                    + (
                        " (node commands are answered by the scheduler)"
                        if act.namespace is None
                        else ""
                    ),
                    "errors": [],
                },
                status=504,
            )
        self.log.info("action sent", action=act.name, target=act.target, ok=reply.ok)
        return web.json_response(act.result(reply))
