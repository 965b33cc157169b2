"""The autoscaler's shell on the in-memory broker, with a fake controller answering ``scale``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from core.bus import Bus
from core.channels import APPS, LB_METRICS, PRESENCE, SCALE, SCALER_STATUS, WAKE
from core.codec import Envelope
from core.commands import AppResult, Reply, ScaleCommand
from core.config import ServiceConfig
from core.keys import AppKey, ServiceKey
from core.memory import MemoryBroker
from core.spec import AppSpec
from core.state import AppState, AppVersion, LbMetrics, RouteMetrics, ScalerStatus, WakeUp
from services.scaler.decide import Policy
from services.scaler.service import ScalerService, ScalerSettings
from tests.support.memory import connected, serving
from tests.support.waiting import eventually

PREFIX = "t"
WEB = AppKey("default", "web")
SETTINGS = ScalerSettings(
    policy=Policy(up_cooldown=0.0, down_cooldown=0.0),
    interval=0.05,
    metrics_window=1.0,
    request_timeout=1.0,
)


class FakeController:
    """Answers ``scale`` as the controller does: reply, then republish the app record."""

    def __init__(self, bus: Bus, spec: AppSpec, replicas: int) -> None:
        self.bus = bus
        self.spec = spec
        self.replicas = replicas
        self.generation = 1
        self.commands: list[ScaleCommand] = []

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

    async def start(self) -> None:
        await self.bus.answer(SCALE, self.on_scale)
        await self.bus.publish(APPS, self.state())

    async def on_scale(self, cmd: ScaleCommand, env: Envelope) -> Reply:
        self.commands.append(cmd)
        self.replicas, self.generation = cmd.replicas, self.generation + 1
        await self.bus.publish(APPS, self.state())
        result = AppResult(namespace=cmd.namespace, name=cmd.name, revision=1, change="scaled")
        return Reply(ok=True, revision=1, results=[result])


@asynccontextmanager
async def running(broker: MemoryBroker) -> AsyncIterator[Bus]:
    """The scaler, and a bus for the test (controller and balancer), once the scaler leads."""
    service = ScalerService(ServiceConfig(broker=broker, prefix=PREFIX, instance="s1"), SETTINGS)
    async with serving(service), connected(broker, PREFIX) as bus:
        presences = await bus.view(PRESENCE, service="scaler")
        await eventually(lambda: (p := presences.get(ServiceKey("scaler", "s1"))) and p.leader)
        yield bus


def web(**autoscale: Any) -> AppSpec:
    return AppSpec.model_validate(
        {
            "name": "web",
            "image": "echo:v1",
            "ports": {"http": 8080},
            "route": {"path": "/"},
            "autoscale": {"min": 1, "max": 8, "target": {"rps_per_replica": 100}, **autoscale},
        }
    )


async def test_load_on_the_balancer_sends_a_scale_command_and_a_status() -> None:
    broker = MemoryBroker()
    async with running(broker) as bus:
        controller = FakeController(bus, web(), replicas=1)
        await controller.start()
        published: list[ScalerStatus] = []
        statuses = await bus.view(
            SCALER_STATUS, on_change=lambda key, s: published.append(s) if s else None
        )
        sample = LbMetrics(
            instance="lb1", apps={str(WEB): RouteMetrics(rps=480, requests=480, p95_ms=20)}
        )

        async def scaled() -> None:
            while not controller.commands:
                await bus.publish(LB_METRICS, sample)
                await asyncio.sleep(0.05)

        await asyncio.wait_for(scaled(), 5)
        [cmd] = controller.commands
        assert (cmd.namespace, cmd.name, cmd.replicas, cmd.source) == (
            "default",
            "web",
            5,
            "autoscaler",
        )
        assert "rps/replica" in cmd.reason
        status = await eventually(
            lambda: next((s for s in published if s.code == "scale_up"), None)
        )
        assert (status.namespace, status.name, status.current, status.desired) == (
            "default",
            "web",
            1,
            5,
        )
        assert status.last_scaled is not None

        await bus.clear(APPS, WEB)  # the app is deleted: its status goes too
        await eventually(lambda: WEB not in statuses)


async def test_a_wake_up_brings_an_app_at_zero_back_at_once() -> None:
    broker = MemoryBroker()
    async with running(broker) as bus:
        controller = FakeController(bus, web(min=0), replicas=0)
        await controller.start()
        statuses = await bus.view(SCALER_STATUS)
        await eventually(lambda: (s := statuses.get(WEB)) and s.code == "at_zero")

        await bus.publish(WAKE, WakeUp(namespace="default", name="web", held=1))
        await eventually(lambda: controller.commands)
        assert [c.replicas for c in controller.commands] == [1]
        assert controller.commands[0].reason.startswith("wake-up")
