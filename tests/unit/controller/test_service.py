"""The controller shell on an in-memory bus: persistence before publication, retries of a
failed publication, strays cleared, commands answered even when a handler breaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from core import codec
from core.codec import Envelope
from core.commands import Reply
from core.config import ServiceConfig
from core.errors import BusError
from core.state import AppState
from core.topics import matches
from services.controller.service import ControllerService
from services.controller.store import Store
from tests.unit.controller.helpers import health


class FakeBus:
    """The slice of ``core.bus.Bus`` the controller uses, in memory."""

    def __init__(self, service: ControllerService) -> None:
        self.topics = service.topics
        self.cache: dict[str, Envelope] = {}
        self.retained: dict[str, Envelope] = {}
        self.replies: list[tuple[str, Envelope]] = []
        self.events: list[Envelope] = []
        self.fail_publish = False
        self.subs: list[tuple[str, Any]] = []

    async def subscribe(self, pattern: str, handler: Any, **_: Any) -> None:
        self.subs.append((pattern, handler))

    def cached(self, pattern: str) -> dict[str, Envelope]:
        return {t: e for t, e in self.cache.items() if matches(pattern, t)}

    async def publish(
        self, topic: str, kind: str, body: BaseModel, *, retain: bool = False, **_: Any
    ) -> Envelope:
        if self.fail_publish:
            raise BusError("broker gone")
        env = codec.make(kind, body)
        if retain:
            self.retained[topic] = env
            self.cache[topic] = env
        elif kind == "event":
            self.events.append(env)
        return env

    async def clear(self, topic: str) -> None:
        if self.fail_publish:
            raise BusError("broker gone")
        self.retained.pop(topic, None)
        self.cache.pop(topic, None)

    async def reply(self, request: Envelope, kind: str, body: BaseModel) -> None:
        if request.reply_to:
            self.replies.append((request.reply_to, codec.make(kind, body, re=request.id)))

    async def sync(self, timeout: float = 5.0) -> None:
        return None

    async def deliver(self, topic: str, env: Envelope | None) -> None:
        if env is None:
            self.cache.pop(topic, None)
        else:
            self.cache[topic] = env
        for pattern, handler in self.subs:
            if matches(pattern, topic):
                result = handler(topic, env)
                if result is not None:
                    await result


@pytest.fixture
async def controller(tmp_path: Path) -> ControllerService:
    service = ControllerService(ServiceConfig(prefix="t"), tmp_path)
    service.bus = FakeBus(service)  # type: ignore[assignment]
    await service.setup()
    return service


def fake(service: ControllerService) -> FakeBus:
    bus = service.bus
    assert isinstance(bus, FakeBus)
    return bus


def command(kind: str, body: dict[str, Any]) -> Envelope:
    return codec.make(kind, body, reply_to="t/reply/me")


def app(image: str = "shoal-test/echo:v1") -> dict[str, Any]:
    return {"name": "web", "image": image, "replicas": 2, "ports": {"http": 80}}


async def test_apply_persists_publishes_and_replies(controller: ControllerService) -> None:
    bus = fake(controller)
    await bus.deliver("t/cmd/apply", command("apply", {"apps": [app()]}))
    [(to, env)] = bus.replies
    assert to == "t/reply/me"
    assert env.open(Reply).revision == 1
    state = bus.retained["t/apps/default/web"].open(AppState)
    assert Store(controller.data_dir / "controller.db").load()[("default", "web")].state == state


async def test_a_failed_publication_is_retried_by_the_next_step(
    controller: ControllerService,
) -> None:
    bus = fake(controller)
    await bus.deliver("t/cmd/apply", command("apply", {"apps": [app()]}))
    first = bus.retained["t/apps/default/web"].open(AppState)
    await bus.deliver("t/health/default/web", codec.make("health", health(first)))
    bus.fail_publish = True
    await bus.deliver("t/cmd/apply", command("apply", {"apps": [app("shoal-test/echo:v2")]}))
    assert bus.replies[-1][1].open(Reply).ok  # persisted: the answer is yes
    assert bus.retained["t/apps/default/web"].open(AppState).revision == 1
    assert ("default", "web") in controller.unpublished
    with pytest.raises(BusError):
        await controller._step(("default", "web"))
    bus.fail_publish = False
    await controller._step(("default", "web"))
    assert bus.retained["t/apps/default/web"].open(AppState).revision == 2
    assert not controller.unpublished


async def test_strays_on_the_apps_topic_are_cleared(controller: ControllerService) -> None:
    bus = fake(controller)
    await bus.deliver("t/cmd/apply", command("apply", {"apps": [app()]}))
    mine = bus.retained["t/apps/default/web"]
    bus.retained["t/apps/default/stray"] = mine
    await bus.deliver("t/apps/default/stray", mine)
    await bus.deliver("t/apps/default/web", mine)
    assert set(bus.retained) == {"t/apps/default/web"}


async def test_a_handler_failure_still_gets_an_answer(
    controller: ControllerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = fake(controller)

    def broken(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(controller.db, "last_revision", broken)
    await bus.deliver("t/cmd/apply", command("apply", {"apps": [app()]}))
    reply = bus.replies[-1][1].open(Reply)
    assert reply.errors == ["apply failed: internal error: disk full"]
    assert "t/apps/default/web" not in bus.retained


@pytest.mark.parametrize(
    ("topic", "env", "error"),
    [
        ("t/cmd/apply", command("delete", {"name": "web"}), "a 'apply' command was expected"),
        ("t/cmd/scale", command("scale", {"name": "web"}), "scale command: replicas: required"),
        ("t/cmd/rollout", command("rollout", {"name": "web", "action": "x"}), "rollout command"),
    ],
)
async def test_bad_commands_get_errors(
    controller: ControllerService, topic: str, env: Envelope, error: str
) -> None:
    bus = fake(controller)
    await bus.deliver(topic, env)
    reply = bus.replies[-1][1].open(Reply)
    assert not reply.ok
    assert reply.errors[0].startswith(error)


async def test_other_services_commands_are_left_alone(controller: ControllerService) -> None:
    bus = fake(controller)
    await bus.deliver("t/cmd/node", command("node_command", {"node": "n", "action": "drain"}))
    assert bus.replies == []
