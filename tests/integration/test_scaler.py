"""The autoscaler as a process on real brokers, fed fake metrics, with a fake controller.

The test plays the other services: it publishes the app record (controller), readiness
(health), balancer samples and wake-ups (balancer), and answers ``cmd/scale`` like the
controller does: reply, then republish the app record with the new count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import codec
from core.bus import Bus, connect_bus
from core.channels import (
    APPLY,
    APPS,
    EVENTS,
    HEALTH,
    LB_METRICS,
    NODE_METRICS,
    PRESENCE,
    SCALE,
    SCALER_STATUS,
    WAKE,
)
from core.codec import Envelope
from core.commands import ApplyCommand, AppResult, Reply, ScaleCommand
from core.config import BrokerURL
from core.keys import AppKey, ServiceKey
from core.spec import AppSpec
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    Event,
    LbMetrics,
    Presence,
    ReplicaHealth,
    RouteMetrics,
    WakeUp,
)
from core.topics import Topics
from tests.support.observer import Observer
from tests.support.procs import ROOT, Broker, ProcGroup

pytestmark = pytest.mark.integration

WINDOW = 3.0
FAST = [
    "--interval", "0.2s",
    "--scale-down-window", f"{WINDOW}s",
    "--up-cooldown", "0.5s",
    "--cooldown", "0.5s",
    "--max-step-down-percent", "100",
    "--idle-after", "2s",
    "--metrics-window", "1s",
    "--request-timeout", "1s",
]  # fmt: skip


class FakeCluster:
    """Controller, health and balancer, as far as the scaler can tell."""

    def __init__(self, broker: Broker, prefix: str, spec: dict[str, Any], replicas: int) -> None:
        self.topics = Topics(prefix)
        self.bus: Bus = connect_bus(
            BrokerURL.parse(broker.url), self.topics, client_id=f"fake-{prefix}"
        )
        self.spec = AppSpec.model_validate(spec)
        self.replicas = replicas
        self.generation = 1
        self.commands: list[tuple[float, ScaleCommand]] = []
        self.refuse: str | None = None
        self.rps = 0.0
        self.held = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def key(self) -> AppKey:
        return AppKey(self.spec.namespace, self.spec.name)

    def state(self) -> AppState:
        return AppState(
            namespace=self.spec.namespace,
            name=self.spec.name,
            revision=1,
            generation=self.generation,
            spec=self.spec,
            replicas=self.replicas,
            versions=[AppVersion(revision=1, spec=self.spec, replicas=self.replicas)],
        )

    async def publish_app(self) -> None:
        await self.bus.publish(APPS, self.state())
        health = AppHealth(
            namespace=self.spec.namespace,
            name=self.spec.name,
            replicas=[
                ReplicaHealth(id=f"default.web.{i:08x}", revision=1, node="n1",
                              endpoint=f"127.0.0.1:{9000 + i}", ready=True)
                for i in range(self.replicas)
            ],
        )  # fmt: skip
        await self.bus.publish(HEALTH, health)

    async def _on_scale(self, topic: str, env: Envelope | None) -> None:
        assert env is not None
        cmd = env.open(ScaleCommand)
        self.commands.append((time.monotonic(), cmd))
        if self.refuse is not None:
            await self.bus.reply(env, "reply", Reply(ok=False, errors=[self.refuse]))
            return
        change = "scaled" if cmd.replicas != self.replicas else "unchanged"
        self.replicas = cmd.replicas
        self.generation += 1
        result = AppResult(namespace=cmd.namespace, name=cmd.name, revision=1, change=change)
        await self.bus.reply(env, "reply", Reply(ok=True, revision=1, results=[result]))
        await self.publish_app()

    async def _balancer(self) -> None:
        while True:
            route = RouteMetrics(
                rps=self.rps,
                requests=int(self.rps / 4),
                inflight=int(self.rps / 100),
                p95_ms=20.0,
                held=self.held,
            )
            sample = LbMetrics(instance="lb1", window=0.25, apps={str(self.key): route})
            await self.bus.publish(LB_METRICS, sample)
            await asyncio.sleep(0.25)

    async def start(self, balancer: bool = True) -> None:
        await self.bus.watch(SCALE.pattern(self.topics.prefix), self._on_scale)
        self._tasks.append(asyncio.create_task(self.bus.run()))
        await self.bus.wait_connected(10)
        await self.publish_app()
        if balancer:
            self._tasks.append(asyncio.create_task(self._balancer()))

    async def stop(self) -> None:
        self.bus.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def counts(self) -> list[int]:
        return [c.replicas for _, c in self.commands]


@contextlib.asynccontextmanager
async def cluster(
    broker: Broker, prefix: str, spec: dict[str, Any], replicas: int, balancer: bool = True
) -> AsyncIterator[FakeCluster]:
    fake = FakeCluster(broker, prefix, spec, replicas)
    await fake.start(balancer)
    try:
        yield fake
    finally:
        await fake.stop()


def web(**autoscale: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "image": "echo:v1",
        "ports": {"http": 8080},
        "route": {"path": "/"},
        "autoscale": {"min": 1, "max": 8, "target": {"rps_per_replica": 100}, **autoscale},
    }


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout}s")
        await asyncio.sleep(0.05)


async def test_load_up_scales_up_and_load_gone_scales_back_to_min_after_the_window(
    broker: Broker, procs: ProcGroup, prefix: str
) -> None:
    async with Observer(broker.url, prefix) as obs, cluster(broker, prefix, web(), 1) as fake:
        procs.service("scaler", broker.url, *FAST, prefix=prefix)
        web_key = AppKey("default", "web")
        await obs.wait_for(lambda: obs.value(SCALER_STATUS, web_key), 15, "first status")

        fake.rps = 480.0  # 4.8 replicas' worth at 100 rps each
        await until(lambda: fake.replicas == 5, 10, "scale up to 5")
        assert fake.counts() == [5]  # one step: 1 -> 5 (step cap 4)
        cmd = fake.commands[-1][1]
        assert (cmd.source, cmd.namespace, cmd.name) == ("autoscaler", "default", "web")
        assert "rps/replica" in cmd.reason

        await asyncio.sleep(WINDOW / 2)
        assert fake.replicas == 5  # steady load: no further change
        fake.rps = 0.0
        gone = time.monotonic()
        await until(lambda: fake.replicas == 1, 15, "scale down to min")
        down_at = next(t for t, c in fake.commands if c.replicas < 5)
        assert down_at - gone >= WINDOW - 1.0  # the samples average over a 1 s window
        counts = fake.counts()
        assert counts[0] == 5
        assert counts[1:] == sorted(counts[1:], reverse=True)  # down only, no flapping
        assert counts[-1] == 1

        def scale_events() -> list[Event]:
            return [
                e.open(Event)
                for _, t, e in obs.seen
                if t == obs.topic(EVENTS, "scale") and e is not None
            ]

        await obs.wait_for(lambda: len(scale_events()) == len(counts), 5, "an event per change")
        up, down = scale_events()[0], scale_events()[-1]
        assert (up.data["from"], up.data["to"], up.data["code"]) == (1, 5, "scale_up")
        assert up.data["rps"] > 400
        assert (down.data["to"], down.data["code"]) == (1, "scale_down")
        status = await obs.wait_for(
            lambda: (s := obs.value(SCALER_STATUS, web_key)) and s.current == 1 and s, 5, "status"
        )
        assert status.last_scaled is not None
        assert status.reason


async def test_scale_to_zero_when_idle_and_back_on_wake_up(
    mosquitto: Broker, procs: ProcGroup, prefix: str
) -> None:
    async with cluster(mosquitto, prefix, web(min=0), 1) as fake:
        procs.service("scaler", mosquitto.url, *FAST, prefix=prefix)
        await until(lambda: fake.replicas == 0, 15, "scale to zero when idle")
        assert fake.commands[-1][1].reason.startswith("no request for")

        woken = time.monotonic()
        await fake.bus.publish(WAKE, WakeUp(namespace="default", name="web", held=1))
        await until(lambda: fake.replicas == 1, 5, "wake-up to 1")
        latency = fake.commands[-1][0] - woken
        assert latency < 2.0, f"wake-up took {latency:.2f}s"

        # a request held by the balancer (no explicit wake-up) also wakes it
        await until(lambda: fake.replicas == 0, 15, "back to zero")
        fake.held = 2
        await until(lambda: fake.replicas == 1, 5, "held request wakes the app")
        assert [c.replicas for _, c in fake.commands] == [0, 1, 0, 1]


async def test_refused_scale_is_reported_and_retried(
    mosquitto: Broker, procs: ProcGroup, prefix: str
) -> None:
    async with Observer(mosquitto.url, prefix) as obs, cluster(mosquitto, prefix, web(), 1) as fake:
        fake.refuse = "replicas 5 is outside autoscale bounds"
        fake.rps = 480.0
        web_key = fake.key
        proc = procs.service("scaler", mosquitto.url, *FAST, prefix=prefix)
        await until(lambda: len(fake.commands) >= 1, 15, "a first command")
        # bad input on every topic the scaler reads must not hurt it
        junk = (LB_METRICS.topic(prefix, "x"), NODE_METRICS.topic(prefix, "n1"),
                WAKE.topic(prefix, web_key), APPS.topic(prefix, AppKey("default", "other")),
                HEALTH.topic(prefix, web_key),
                PRESENCE.topic(prefix, ServiceKey("scaler", "x")))  # fmt: skip
        wrong_kind = codec.make("event", {"kind": "x", "message": "wrong kind"})
        for topic in junk:
            await fake.bus.publish_raw(topic, b"\x93garbage")
            await fake.bus.publish_raw(topic, codec.encode(wrong_kind))
        other_app = codec.make("wake", {"namespace": "x", "name": "y"})
        await fake.bus.publish_raw(WAKE.topic(prefix, web_key), codec.encode(other_app))

        await until(lambda: len(fake.commands) >= 2, 15, "a retry after a refusal")
        status = await obs.wait_for(
            lambda: (s := obs.value(SCALER_STATUS, web_key)) and s.code == "error" and s,
            5,
            "error status",
        )
        assert "outside autoscale bounds" in status.reason
        assert fake.replicas == 1
        fake.refuse = None
        await until(lambda: fake.replicas == 5, 15, "scale once the controller agrees")
        assert proc.alive()
        log = proc.output()
        assert "scale command failed" in log
        assert "malformed" in log
        assert "handler failed" not in log  # every bad message was handled, not crashed on


async def test_deleted_app_loses_its_status(
    mosquitto: Broker, procs: ProcGroup, prefix: str
) -> None:
    async with Observer(mosquitto.url, prefix) as obs, cluster(mosquitto, prefix, web(), 2) as fake:
        procs.service("scaler", mosquitto.url, *FAST, prefix=prefix)
        await obs.wait_for(lambda: obs.value(SCALER_STATUS, fake.key), 15, "status")
        await fake.bus.clear(APPS, fake.key)
        await obs.wait_for(lambda: obs.value(SCALER_STATUS, fake.key) is None, 5, "cleared")


async def test_cli_scale_prints_the_reply(mosquitto: Broker, prefix: str) -> None:
    async with cluster(mosquitto, prefix, web(), 1, balancer=False) as fake:
        env = {**os.environ, "SHOAL_BROKER": mosquitto.url, "SHOAL_PREFIX": prefix}

        def shoal(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-m", "services.cli", *args, "--timeout", "5"]
            return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)

        done = await asyncio.to_thread(shoal, "scale", "web", "3", "-n", "default")
        assert done.returncode == 0, done.stderr
        last = done.stdout.strip().splitlines()[-1]
        assert last == "app default/web scaled to 3 replicas (revision 1)"
        assert fake.commands[-1][1].source == "manual"

        fake.refuse = "replicas 30 is above autoscale max 8"
        done = await asyncio.to_thread(shoal, "scale", "web", "30")
        assert done.returncode == 1
        assert "replicas 30 is above autoscale max 8" in done.stderr

        done = await asyncio.to_thread(shoal, "scale", "web", "-2")
        assert done.returncode == 2


async def test_one_instance_acts_and_a_standby_takes_over(
    mosquitto: Broker, procs: ProcGroup, prefix: str
) -> None:
    spec = web(max=12)
    async with Observer(mosquitto.url, prefix) as obs, cluster(mosquitto, prefix, spec, 1) as fake:

        def presence(instance: str) -> Presence | None:
            return obs.value(PRESENCE, ServiceKey("scaler", instance))

        first = procs.service("scaler", mosquitto.url, *FAST, "--instance", "a", prefix=prefix)
        await obs.wait_for(lambda: (p := presence("a")) and p.leader, 15, "a leads")
        procs.service("scaler", mosquitto.url, *FAST, "--instance", "b", prefix=prefix)
        await obs.wait_for(lambda: presence("b"), 15, "b online")
        await asyncio.sleep(0.5)
        assert presence("b").leader is False  # type: ignore[union-attr]

        fake.rps = 480.0
        await until(lambda: fake.replicas == 5, 10, "scale up by the leader")
        await asyncio.sleep(1.0)
        assert fake.counts() == [5]  # the standby sent nothing

        first.kill()  # no goodbye: the broker publishes a's last will
        await obs.wait_for(lambda: (p := presence("b")) and p.leader, 10, "b takes over")
        fake.rps = 880.0
        await until(lambda: fake.replicas == 9, 10, "scale up by the new leader")
        assert fake.counts() == [5, 9]


async def test_with_the_real_controller(mosquitto: Broker, procs: ProcGroup, prefix: str) -> None:
    """The contract with the controller: autoscaler commands change the app record, a manual
    scale outside [min, max] and bad autoscale specs are refused with clear errors."""
    data_dir = procs.workdir / f"controller-{prefix}"
    procs.service("controller", mosquitto.url, "--data-dir", str(data_dir), prefix=prefix)
    procs.service("scaler", mosquitto.url, *FAST, prefix=prefix)
    async with Observer(mosquitto.url, prefix) as obs:
        web_key = AppKey("default", "web")

        def controller_online() -> bool:
            presences = obs.values(PRESENCE, service="controller").values()
            return any(p.status == "online" for p in presences)

        await obs.wait_for(controller_online, 15, "controller online")

        async def apply(*apps: dict[str, Any]) -> Reply:
            return await obs.bus.request(APPLY, ApplyCommand(apps=list(apps)), timeout=10)

        bad = web(min=3, max=2)
        reply = await apply(bad)
        assert not reply.ok
        assert any("autoscale min (3) is greater than max (2)" in e for e in reply.errors), (
            reply.errors
        )

        reply = await apply(web(max=6))
        assert reply.ok, reply.errors
        await obs.wait_for(lambda: obs.value(APPS, web_key), 10, "app record")

        reply = await obs.bus.request(SCALE, ScaleCommand(name="web", replicas=9), timeout=10)
        assert not reply.ok
        assert any("between 1 and 6" in e for e in reply.errors), reply.errors

        sample = LbMetrics(
            instance="lb1", apps={"default/web": RouteMetrics(rps=420, requests=420)}
        )
        for _ in range(40):
            await obs.bus.publish(LB_METRICS, sample)
            state = obs.value(APPS, web_key)
            if state is not None and state.replicas == 5:
                break
            await asyncio.sleep(0.25)
        state = obs.value(APPS, web_key)
        assert state is not None
        assert state.replicas == 5
        status = obs.value(SCALER_STATUS, web_key)
        assert status is not None
        assert status.code in ("scale_up", "hold")
