"""The balancer's shell on the in-memory broker: apps and health in, routes, wake-ups and
metrics out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from core.bus import Bus
from core.channels import ACME_CHALLENGES, APPS, HEALTH, LB_METRICS, NODE_INFO, WAKE
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from core.spec import AppSpec
from core.state import (
    AcmeChallenge,
    AppHealth,
    AppState,
    AppVersion,
    LbMetrics,
    NodeInfo,
    ReplicaHealth,
    RouteMetrics,
    WakeUp,
)
from core.topics import Topics
from services.balancer.policy import ProxyOptions
from services.balancer.service import BalancerOptions, BalancerService
from tests.support.memory import connected, serving
from tests.support.net import free_port
from tests.support.waiting import eventually

PREFIX = "t"
WEB = AppKey("d", "web")
HIDDEN = AppKey("d", "hidden")
COLD = AppKey("d", "cold")
NO_TRAFFIC = RouteMetrics()


async def listening(port: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            return


@asynccontextmanager
async def running(
    broker: MemoryBroker, engine: str = "fast", region: str | None = None
) -> AsyncIterator[tuple[BalancerService, Bus, str]]:
    """The balancer on a free port, and a bus that plays the controller and health."""
    port = free_port()
    options = BalancerOptions(
        listen=("127.0.0.1", port),
        engine=engine,
        region=region,
        metrics_interval=0.1,
        proxy=ProxyOptions(hold_timeout=0.5),
    )
    service = BalancerService(ServiceConfig(broker=broker, prefix=PREFIX, instance="lb1"), options)
    async with connected(broker, PREFIX) as bus, serving(service, timeout=10):
        await listening(port)
        yield service, bus, f"http://127.0.0.1:{port}"


def app(key: AppKey, *, route: bool = True, scale_to_zero: bool = False) -> AppState:
    doc: dict[str, Any] = {"name": key.name, "image": "x:1", "ports": {"http": 8080}}
    if route:
        doc["route"] = {"host": f"{key.name}.test", "port": "http"}
    if scale_to_zero:
        doc["autoscale"] = {"min": 0, "max": 2, "target": {"rps_per_replica": 5}}
    spec = AppSpec.model_validate(doc)
    replicas = 0 if scale_to_zero else 2
    return AppState(
        namespace=key.namespace,
        name=key.name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=replicas,
        versions=[AppVersion(revision=1, spec=spec, replicas=replicas)],
    )


def health(key: AppKey, ready: list[str], terminating: tuple[str, ...] = ()) -> AppHealth:
    replicas = [
        ReplicaHealth(
            id=rid,
            revision=1,
            node="n1",
            endpoint=f"127.0.0.1:{30000 + i}",
            ready=rid in ready,
            terminating=rid in terminating,
        )
        for i, rid in enumerate([*ready, *terminating])
    ]
    return AppHealth(namespace=key.namespace, name=key.name, replicas=replicas)


def backends(service: BalancerService, key: str) -> list[str] | None:
    route = service.route_table().get(key)
    return None if route is None else [b["id"] for b in route["backends"]]


async def test_routes_follow_apps_and_health() -> None:
    broker = MemoryBroker()
    async with running(broker) as (service, bus, _url):
        # retained before the balancer subscribed, or published after: the same
        await bus.publish(APPS, app(WEB))
        await bus.publish(APPS, app(HIDDEN, route=False))
        await bus.publish(HEALTH, health(WEB, ["r1", "r2"], terminating=("r3",)))
        await eventually(lambda: backends(service, "d/web") == ["r1", "r2"])
        assert list(service.route_table()) == ["d/web"]  # an app without a route: no route
        assert service.route_table()["d/web"]["host"] == "web.test"
        assert service.policy.table.match("web.test", "/") is service.routes[WEB]

        await bus.publish(HEALTH, health(WEB, ["r2"]))
        await eventually(lambda: backends(service, "d/web") == ["r2"])

        await bus.clear(HEALTH, WEB)
        await eventually(lambda: backends(service, "d/web") == [])

        await bus.clear(APPS, WEB)
        await eventually(lambda: not service.route_table())
        assert service.policy.table.match("web.test", "/") is None


def node(name: str, region: str | None) -> NodeInfo:
    labels = {"region": region} if region else {}
    return NodeInfo(
        node=name, address="127.0.0.1", labels=labels, capacity={"cpu": 1, "memory": 2**30}
    )


async def test_a_regional_balancer_prefers_its_regions_replicas() -> None:
    broker = MemoryBroker()
    async with running(broker, region="eu") as (service, bus, _url):
        both = health(WEB, ["r1", "r2"])
        both = both.model_copy(
            update={
                "replicas": [both.replicas[0], both.replicas[1].model_copy(update={"node": "n2"})]
            }
        )
        await bus.publish(APPS, app(WEB))
        await bus.publish(HEALTH, both)
        await bus.publish(NODE_INFO, node("n1", "us"))
        await bus.publish(NODE_INFO, node("n2", "eu"))
        await eventually(lambda: backends(service, "d/web") == ["r2"])
        assert [b["id"] for b in service.route_table()["d/web"]["remote"]] == ["r1"]
        # heartbeats change nothing; a relabelled node moves its replicas between tiers
        await bus.publish(NODE_INFO, node("n1", "us"))
        await bus.publish(NODE_INFO, node("n1", "eu"))
        await eventually(lambda: backends(service, "d/web") == ["r1", "r2"])
        await bus.clear(NODE_INFO, "n2")
        await bus.clear(NODE_INFO, "n1")
        # no node of the region known any more: every ready replica alike
        await eventually(lambda: service.node_regions == {})
        await eventually(lambda: backends(service, "d/web") == ["r1", "r2"])
        assert service.route_table()["d/web"]["remote"] == []


async def test_a_restarted_balancer_serves_the_retained_routes() -> None:
    broker = MemoryBroker()
    publisher = broker.bus(Topics(PREFIX), client_id="controller")
    task = asyncio.create_task(publisher.run())
    await publisher.wait_connected(5)
    await publisher.publish(APPS, app(WEB))
    await publisher.publish(HEALTH, health(WEB, ["r1"]))
    publisher.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    async with running(broker) as (service, _bus, _url):
        await eventually(lambda: backends(service, "d/web") == ["r1"])


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
async def test_a_request_for_an_app_at_zero_is_held_and_wakes_it(engine: str) -> None:
    broker = MemoryBroker()
    wakes: list[WakeUp] = []
    metrics: list[LbMetrics] = []
    async with running(broker, engine) as (service, bus, url):
        await bus.subscribe(WAKE, lambda _k, v: wakes.append(v) if v else None)
        await bus.subscribe(LB_METRICS, lambda _k, v: metrics.append(v) if v else None)
        await bus.publish(APPS, app(COLD, scale_to_zero=True))
        await eventually(lambda: backends(service, "d/cold") == [])
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Host": "cold.test"}) as r,
        ):
            assert r.status == 503
            assert "app d/cold is scaled to zero" in await r.text()
        assert wakes
        assert wakes[0].namespace == "d"
        assert wakes[0].name == "cold"
        assert wakes[0].held == 1
        cold = [m.apps["d/cold"] for m in metrics if m.instance == "lb1" and "d/cold" in m.apps]
        assert any(m.held == 1 for m in cold)  # published while the request waited
        done = await eventually(
            lambda: [m.apps["d/cold"] for m in metrics if m.apps.get("d/cold", NO_TRAFFIC).requests]
        )
        assert done[0].requests == 1
        assert done[0].errors == 1  # the 503


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
async def test_redirect_to_https_and_challenges_from_the_bus(engine: str) -> None:
    """A route with ``tls: {redirect: true}`` answers plain HTTP 308 to HTTPS (path and
    query kept, any method); a challenge another instance published on the bus is answered
    on plain HTTP, never redirected; once withdrawn, its path goes to the app."""
    broker = MemoryBroker()
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "x:1",
            "ports": {"http": 8080},
            "route": {"host": "web.test", "port": "http", "tls": {"acme": True, "redirect": True}},
        }
    )
    state = app(WEB).model_copy(
        update={"spec": spec, "versions": [AppVersion(revision=1, spec=spec, replicas=2)]}
    )
    challenge = AcmeChallenge(
        token="tok-1_A",
        key_authorization="tok-1_A.thumbprint",
        host="web.test",
        instance="lb-other",
        expires=time.time() + 600,
    )
    async with running(broker, engine) as (service, bus, url), aiohttp.ClientSession() as http:
        await bus.publish(APPS, state)
        # a malformed challenge is dropped (logged), the service keeps going
        topic = ACME_CHALLENGES.topic(PREFIX, "bad")
        await bus.publish_raw(topic, b"\x93not msgpack", retain=True)
        await bus.publish(ACME_CHALLENGES, challenge)
        await eventually(lambda: "tok-1_A" in service.policy.challenges)
        assert "bad" not in service.policy.challenges
        await eventually(lambda: "d/web" in service.route_table())
        headers = {"Host": "web.test:8080"}
        async with http.get(
            f"{url}/a/../b/c?x=1&y=%20", headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 308
            assert r.headers["Location"] == "https://web.test/b/c?x=1&y=%20"
        async with http.post(
            f"{url}/form", data=b"x" * 1000, headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 308
            assert r.headers["Location"] == "https://web.test/form"
        path = f"{url}/.well-known/acme-challenge/tok-1_A"
        async with http.get(path, headers=headers, allow_redirects=False) as r:
            assert r.status == 200
            assert await r.read() == b"tok-1_A.thumbprint"
        await bus.clear(ACME_CHALLENGES, "tok-1_A")
        await eventually(lambda: "tok-1_A" not in service.policy.challenges)
        async with http.get(path, headers=headers, allow_redirects=False) as r:
            assert r.status == 503  # to the app (no ready replica here), not redirected
