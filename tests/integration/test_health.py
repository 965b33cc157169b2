"""The health monitor as a process on a real broker, probing local aiohttp backends.

The test plays controller and agent: it publishes ``apps/...`` and ``nodes/<n>/replicas``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from core.channels import HEALTH
from core.keys import AppKey
from core.state import AppHealth, Event
from services.health.logic import owner
from tests.integration.test_balancer_kit import (
    Publisher,
    app_state,
    backends,
    get,
    statuses,
    wait_until,
)
from tests.support.net import free_port, wait_port
from tests.support.observer import Observer
from tests.support.procs import Broker, ProcGroup

pytestmark = pytest.mark.integration

FAST_HTTP = {"http": "/healthz", "port": "http", "interval": "100ms", "timeout": "500ms"}


def ready_ids(obs: Observer, app: str = "web") -> set[str] | None:
    h = obs.value(HEALTH, AppKey("default", app))
    return None if h is None else {r.id for r in h.ready}


async def test_readiness_gating_terminating_and_delete(
    broker: Broker, procs: ProcGroup, prefix: str
) -> None:
    procs.service("health", broker.url, prefix=prefix)
    async with (
        backends(3, one_host=True) as bs,
        Publisher(broker.url, prefix) as pub,
        Observer(broker.url, prefix) as obs,
    ):
        for b in bs:
            b.healthy = False
        await pub.app(app_state(health={"readiness": {**FAST_HTTP, "failures": 1}}))
        await pub.replicas(statuses(bs))
        web = AppKey("default", "web")

        def health() -> AppHealth | None:
            return obs.value(HEALTH, web)

        await obs.wait_for(lambda: health() and len(health().replicas) == 3, 10, "3 replicas")
        assert ready_ids(obs) == set()
        assert all(r.endpoint == b.endpoint for r, b in zip(health().replicas, bs, strict=True))
        # listed before probed: every backend gets its first probe soon after
        await obs.wait_for(lambda: all(b.probes for b in bs), 5, "every replica probed")

        bs[0].healthy = bs[1].healthy = True
        await obs.wait_for(lambda: ready_ids(obs) == {bs[0].id, bs[1].id}, 5, "2 ready")
        bs[1].healthy = False
        await obs.wait_for(lambda: ready_ids(obs) == {bs[0].id}, 5, "1 ready")
        unready = next(r for r in health().replicas if r.id == bs[1].id)
        assert "HTTP 503" in unready.reason

        # terminating: out at once, flagged, even though its probe still passes
        await pub.replicas(statuses(bs, phases={bs[0].id: "terminating"}))
        await obs.wait_for(lambda: ready_ids(obs) == set(), 5, "none ready")
        term = next(r for r in health().replicas if r.id == bs[0].id)
        assert term.terminating
        assert not term.ready

        def events() -> set[str]:
            return {
                env.open(Event).kind
                for _t, t, env in obs.seen
                if env is not None and t.startswith(f"{prefix}/events/")
            }

        wanted = {"replica_ready", "replica_unready", "replica_terminating"}
        await obs.wait_for(lambda: wanted <= events(), 5, "transition events")

        await pub.delete_app("web")
        await obs.wait_for(lambda: obs.topic(HEALTH, web) not in obs.cache, 5, "health cleared")


async def test_no_probe_tcp_probe_and_liveness(
    mosquitto: Broker, procs: ProcGroup, prefix: str
) -> None:
    procs.service("health", mosquitto.url, prefix=prefix)
    async with (
        backends(1, "plain") as plain,
        backends(1, "tcp", first_host=3) as tcp,
        backends(1, "live", first_host=4) as live,
        Publisher(mosquitto.url, prefix) as pub,
        Observer(mosquitto.url, prefix) as obs,
    ):
        await pub.app(app_state("plain"))
        await pub.app(app_state("tcp", health={"readiness": {"tcp": "http", "interval": "100ms"}}))
        await pub.app(
            app_state(
                "live",
                health={"liveness": {**FAST_HTTP, "failures": 2}},
            )
        )
        await pub.replicas(statuses(plain, app="plain", node="n1"))
        await pub.replicas(statuses(tcp, app="tcp", node="n2"))
        await pub.replicas(statuses(live, app="live", node="n3"))
        await obs.wait_for(lambda: ready_ids(obs, "plain") == {plain[0].id}, 5, "plain")
        await obs.wait_for(lambda: ready_ids(obs, "tcp") == {tcp[0].id}, 5, "tcp")
        await obs.wait_for(lambda: ready_ids(obs, "live") == {live[0].id}, 5, "live")

        await tcp[0].stop()
        await obs.wait_for(lambda: ready_ids(obs, "tcp") == set(), 10, "tcp down")

        live[0].healthy = False
        key = AppKey("default", "live")

        def dead() -> bool:
            h = obs.value(HEALTH, key)
            return h is not None and not h.replicas[0].live

        await obs.wait_for(dead, 5, "liveness failed")
        h = obs.value(HEALTH, key)
        assert h is not None
        assert h.replicas[0].started_at == 1000.0  # the incarnation the agent must restart
        # a restarted container (new start time) is judged afresh
        await pub.replicas(statuses(live, app="live", node="n3", started_at=2000.0))
        live[0].healthy = True
        await obs.wait_for(
            lambda: (
                (h := obs.value(HEALTH, key))
                and h.replicas[0].live
                and h.replicas[0].started_at == 2000.0
            ),
            5,
            "alive again",
        )


async def test_two_health_instances_share_and_take_over(
    mosquitto: Broker, procs: ProcGroup, prefix: str
) -> None:
    apps = [f"a{i}" for i in range(4)]

    # instance names whose rendezvous split gives each at least one app
    def owners(i: int) -> set[str | None]:
        pair = [f"h1-{prefix}-{i}", f"h2-{prefix}-{i}"]
        return {owner(AppKey("default", a), pair) for a in apps}

    i = next(i for i in range(100) if len(owners(i)) == 2)
    names = (f"h1-{prefix}-{i}", f"h2-{prefix}-{i}")
    h1 = procs.service("health", mosquitto.url, "--instance", names[0], prefix=prefix)
    procs.service("health", mosquitto.url, "--instance", names[1], prefix=prefix)
    async with (
        backends(1, "a0", first_host=2) as b0,
        backends(1, "a1", first_host=3) as b1,
        backends(1, "a2", first_host=4) as b2,
        backends(1, "a3", first_host=5) as b3,
        Publisher(mosquitto.url, prefix) as pub,
        Observer(mosquitto.url, prefix) as obs,
    ):
        by_app = dict(zip(apps, (b0[0], b1[0], b2[0], b3[0]), strict=True))
        for i, (app, b) in enumerate(by_app.items()):
            await pub.app(app_state(app, health={"readiness": {**FAST_HTTP, "failures": 1}}))
            await pub.replicas(statuses([b], app=app, node=f"n{i}"))
        for app in apps:
            await obs.wait_for(lambda app=app: ready_ids(obs, app), 10, f"{app} ready")

        # once both instances have seen each other, each app is probed by its owner only
        expected = {app: owner(AppKey("default", app), list(names)) for app in apps}
        assert set(expected.values()) == set(names)

        async def settled() -> bool:
            for b in by_app.values():
                b.probes.clear()
            await asyncio.sleep(0.6)
            return all(
                len(b.probes) >= 2 and set(b.probes) == {f"shoal-health/{expected[app]}"}
                for app, b in by_app.items()
            )

        await wait_until(settled, 15, "each app probed by its owner only")

        # the first instance dies without a goodbye: the other takes its share over
        h1.kill()
        orphan = next(app for app in apps if expected[app] == names[0])
        await wait_until(
            lambda: by_app[orphan].probes[-1] == f"shoal-health/{names[1]}", 30, "takeover"
        )
        assert ready_ids(obs, orphan) == {by_app[orphan].id}  # no flap on takeover
        by_app[orphan].healthy = False
        await obs.wait_for(lambda: ready_ids(obs, orphan) == set(), 5, "orphan probed")


async def test_health_and_balancer_gate_traffic(
    mosquitto: Broker, procs: ProcGroup, prefix: str
) -> None:
    port = free_port()
    procs.service("health", mosquitto.url, prefix=prefix)
    procs.service("balancer", mosquitto.url, "--listen", f"127.0.0.1:{port}", prefix=prefix)
    wait_port("127.0.0.1", port, 20)
    url = f"http://127.0.0.1:{port}"
    async with (
        backends(3, one_host=True) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        for b in bs[1:]:
            b.healthy = False  # still starting
        await pub.app(app_state(health={"readiness": {**FAST_HTTP, "failures": 1}}))
        await pub.replicas(statuses(bs))

        async def only_first() -> bool:
            answers = {(await get(s, url))[1] for _ in range(6)}
            return answers == {bs[0].id}

        await wait_until(only_first, 10, "traffic to the ready replica only")
        for b in bs[1:]:
            assert not b.requests
        for b in bs[1:]:
            b.healthy = True

        async def all_three() -> bool:
            return {(await get(s, url))[1] for _ in range(6)} == {b.id for b in bs}

        await wait_until(all_three, 10, "traffic to all three")
