"""A cluster whose every message is rewritten as a newer Shoal would write it keeps working.

Upgrading one service at a time means older readers get messages with fields they do not
know. Every retained value is republished with an unknown field in every model (at any
depth), every other kind is sent once the same way, and then the cluster must still do its
job: answer commands, place, probe, route and scale. Commands with unknown fields are
refused, since what users write stays strict.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from core import codec
from core.channels import (
    APPLY,
    CHANNELS,
    EVENTS,
    LB_METRICS,
    LOGS_REQUEST,
    LOGS_STREAM,
    NODE_METRICS,
    PRESENCE,
    SCALE,
    WAKE,
)
from core.commands import Reply
from core.keys import AppKey
from core.state import (
    Event,
    LbMetrics,
    LogChunk,
    LogsRequest,
    NodeMetrics,
    RouteMetrics,
    WakeUp,
)
from tests.support.cluster import Cluster, wait_for
from tests.support.observer import Observer
from tests.support.skew import FIELD, with_unknown_fields

pytestmark = pytest.mark.e2e

ECHO = """
name: echo
image: shoal-test/echo:v1
replicas: 2
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 300ms, timeout: 500ms, failures: 1}
route: {host: echo.test, path: /, port: http}
termination: {drain: 300ms, grace: 3s}
"""


def ready(cluster: Cluster, n: int) -> bool:
    apps = cluster.get_json("apps")
    return bool(apps) and apps[0]["ready"] == n and apps[0]["desired"] == n


async def test_every_service_tolerates_a_newer_peer(cluster: Cluster) -> None:
    cluster.start(scaler=True)
    await asyncio.to_thread(cluster.apply_text, ECHO, "--wait")
    key = AppKey("default", "echo")
    async with Observer(cluster.broker.url, cluster.prefix) as obs:
        bus, prefix = obs.bus, cluster.prefix

        async def send(channel_kind: str, topic: str, body: object, retain: bool) -> None:
            env = codec.make(channel_kind, body, src="newer/shoal")  # type: ignore[arg-type]
            await bus.publish_raw(topic, codec.encode(env), retain=retain)

        rewritten = 0
        for channel in CHANNELS:
            if not channel.retained:
                continue
            for k, value in obs.values(channel).items():
                await send(channel.kind, channel.topic(prefix, k), with_unknown_fields(value), True)
                rewritten += 1
        assert rewritten >= 10  # app, node, assignment, replicas, statuses, health, presences

        request_id = uuid.uuid4().hex[:12]
        chunks: list[LogChunk] = []
        await bus.subscribe(
            LOGS_STREAM, lambda _k, v: chunks.append(v) if v else None, key=request_id
        )
        once = [
            (WAKE, WakeUp(namespace="default", name="echo", held=0)),
            (LB_METRICS, LbMetrics(instance="newer-lb", apps={str(key): RouteMetrics()})),
            (NODE_METRICS, NodeMetrics(node="newer-node")),
            (EVENTS, Event(kind="upgraded", message="a newer Shoal says hello")),
            (LOGS_STREAM, LogChunk(request="nobody", node="n", replica="r", lines=["x"])),
            (LOGS_REQUEST, LogsRequest(id=request_id, app="echo", tail=3)),
        ]
        for channel, body in once:
            await send(
                channel.kind,
                channel.topic(prefix, channel.key_for(body)),
                with_unknown_fields(body),
                False,
            )
        await obs.wait_for(lambda: any(c.eof for c in chunks), 20, "logs streamed by the agent")

        # What users write stays strict: unknown fields in a command are refused.
        answer = await bus.request_raw(
            APPLY.topic(prefix), APPLY.kind, {"apps": [], FIELD: 1}, timeout=10
        )
        refused = answer.open(Reply)
        assert not refused.ok
        assert any(FIELD in e for e in refused.errors), refused.errors
        answer = await bus.request_raw(
            SCALE.topic(prefix), SCALE.kind, {"name": "echo", "replicas": 3, FIELD: 1}
        )
        assert not answer.open(Reply).ok

        # Nothing crashed, nobody went offline.
        await bus.sync()
        offline = [p for p in obs.values(PRESENCE).values() if p.status != "online"]
        assert not offline, offline
    for name, proc in {**cluster.services, **cluster.agents}.items():
        assert proc.alive(), f"{name} died:\n{proc.output()}"

    # ... and the cluster still does its job: scale, place, probe, route.
    await asyncio.to_thread(cluster.shoal, "scale", "echo", "3")
    await asyncio.to_thread(wait_for, lambda: ready(cluster, 3), 60, 0.3, "3 replicas ready")
    hostnames = set()
    for _ in range(30):
        r = await asyncio.to_thread(cluster.get, "/", "echo.test")
        assert r.status == 200, r
        hostnames.add(r.body.split()[1])
    assert len(hostnames) == 3
