"""The dashboard's shell on the in-memory broker: state pushed to pages, actions sent as the
CLI's commands and refused outside the role, Prometheus SD from presence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from core.channels import APPS, EVENTS, EVENTS_QUERY, PRESENCE, SCALE
from core.codec import Envelope
from core.commands import EventList, EventsQuery, Reply, ScaleCommand
from core.config import ServiceConfig
from core.memory import MemoryBroker
from core.spec import AppSpec
from core.state import AppState, AppVersion, Event, Presence
from services.dashboard.authz import Role
from services.dashboard.service import DashboardService, DashboardSettings
from tests.support.memory import connected, serving
from tests.support.waiting import eventually

PREFIX = "t"
SPEC = AppSpec(name="web", image="echo:v1")


def web(replicas: int = 1) -> AppState:
    return AppState(
        namespace="default",
        name="web",
        revision=1,
        generation=1,
        spec=SPEC,
        replicas=replicas,
        versions=[AppVersion(revision=1, spec=SPEC, replicas=replicas)],
    )


@asynccontextmanager
async def dashboard(
    broker: MemoryBroker, role: Role | None = None
) -> AsyncIterator[tuple[DashboardService, str]]:
    settings = DashboardSettings(host="127.0.0.1", port=0, role=role or Role())
    service = DashboardService(ServiceConfig(broker=broker, prefix=PREFIX, instance="d1"), settings)
    async with serving(service):
        await eventually(lambda: service.port != 0)
        yield service, f"http://127.0.0.1:{service.port}"


async def events_of(resp: aiohttp.ClientResponse, kind: str) -> AsyncIterator[Any]:
    """The data of every server-sent event of ``kind`` on an open stream."""
    current = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            current = line[7:]
        elif line.startswith("data: ") and current == kind:
            yield json.loads(line[6:])


async def test_a_page_gets_the_state_then_every_change() -> None:
    broker = MemoryBroker()
    async with (
        dashboard(broker) as (_, url),
        connected(broker, PREFIX) as bus,
        aiohttp.ClientSession() as http,
        http.get(url + "/api/stream") as resp,
    ):
        assert resp.headers["Content-Type"] == "text/event-stream"
        states = events_of(resp, "state")
        assert (await anext(states))["apps"] == []
        await bus.publish(APPS, web())
        state = await anext(states)
        assert [a["key"] for a in state["apps"]] == ["default/web"]


async def test_events_are_kept_for_pages_that_open_later() -> None:
    broker = MemoryBroker()
    async with dashboard(broker) as (service, url), connected(broker, PREFIX) as bus:
        await bus.publish(EVENTS, Event(kind="replica_started", message="hello", app="web"))
        await eventually(lambda: service.events.recent())
        async with aiohttp.ClientSession() as http, http.get(url + "/api/stream") as resp:
            history = await anext(events_of(resp, "events"))
        assert [e["message"] for e in history] == ["hello"]
        async with aiohttp.ClientSession() as http, http.get(url + "/api/events?app=web") as r:
            assert [e["kind"] for e in await r.json()] == ["replica_started"]
        answer = await bus.request(EVENTS_QUERY, EventsQuery(app="web"))
        assert isinstance(answer, EventList)
        assert [e.message for e in answer.events] == ["hello"]
        assert answer.kept == 500
        other = await bus.request(EVENTS_QUERY, EventsQuery(app="db"))
        assert isinstance(other, EventList)
        assert other.events == []


async def test_scale_is_the_cli_command_and_its_answer_is_shown() -> None:
    broker = MemoryBroker()
    got: list[ScaleCommand] = []

    async def on_scale(cmd: ScaleCommand, env: Envelope) -> Reply:
        got.append(cmd)
        return Reply(ok=True, revision=1)

    async with (
        dashboard(broker) as (_, url),
        connected(broker, PREFIX, client_id="controller") as bus,
        aiohttp.ClientSession() as http,
    ):
        await bus.answer(SCALE, on_scale)
        body = {"action": "scale", "namespace": "default", "name": "web", "replicas": 3}
        async with http.post(url + "/api/action", json=body) as resp:
            answer = await resp.json()
        assert answer == {
            "ok": True,
            "message": "default/web scaled to 3 (revision 1)",
            "errors": [],
        }
        assert got == [ScaleCommand(name="web", replicas=3, source="manual")]
        async with http.post(url + "/api/action", json={"action": "scale", "name": "web"}) as r:
            assert r.status == 400
        cross_site = {"Origin": "http://evil.example"}
        async with http.post(url + "/api/action", json=body, headers=cross_site) as r:
            assert r.status == 403
        assert len(got) == 1


async def test_a_read_only_dashboard_refuses_and_sends_nothing() -> None:
    broker = MemoryBroker()
    got: list[ScaleCommand] = []

    async def on_scale(cmd: ScaleCommand, env: Envelope) -> Reply:
        got.append(cmd)
        return Reply(ok=True)

    async with (
        dashboard(broker, Role(read_only=True)) as (_, url),
        connected(broker, PREFIX, client_id="controller") as bus,
        aiohttp.ClientSession() as http,
    ):
        await bus.answer(SCALE, on_scale)
        body = {"action": "scale", "name": "web", "replicas": 3}
        async with http.post(url + "/api/action", json=body) as resp:
            answer = await resp.json()
        assert answer["ok"] is False
        assert answer["refused"] is True
        assert "read-only" in answer["message"]
    assert got == []


async def test_prometheus_sd_lists_live_instances_with_metrics() -> None:
    broker = MemoryBroker()
    async with (
        dashboard(broker) as (service, url),
        connected(broker, PREFIX) as bus,
        aiohttp.ClientSession() as http,
    ):
        await bus.publish(
            PRESENCE,
            Presence(service="scheduler", instance="s1", host="m1", metrics="127.0.0.1:9100"),
        )
        await eventually(lambda: len(service.cluster.presence) == 2)
        async with http.get(url + "/sd/prometheus") as resp:
            assert await resp.json() == [
                {
                    "targets": ["127.0.0.1:9100"],
                    "labels": {"service": "scheduler", "instance": "s1", "node": "m1"},
                }
            ]
        async with http.get(url + "/") as resp:
            assert "Shoal dashboard" in await resp.text()
        async with http.get(url + "/static/app.js") as resp:
            assert resp.status == 200
