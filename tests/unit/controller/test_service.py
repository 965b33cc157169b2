"""The controller shell on the in-memory broker: persistence before publication, retries of
a failed publication, strays cleared, commands answered even when a handler breaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from core import paging
from core.bus import Bus
from core.channels import APPLY, APPS, HEALTH, HISTORY, NODE
from core.codec import Envelope
from core.commands import ApplyCommand, HistoryQuery, NodeCommand, Reply
from core.config import ServiceConfig
from core.errors import BusError, RequestTimeout
from core.keys import AppKey
from core.memory import MemoryBroker
from core.topics import matches
from services.controller.service import ControllerService
from services.controller.store_sqlite import SqliteStore
from tests.support.memory import connected, serving
from tests.support.waiting import eventually
from tests.unit.controller.helpers import health

PREFIX = "t"
WEB = AppKey("default", "web")


class RefusingBroker(MemoryBroker):
    """A broker that refuses publications on the topics matching ``refuse`` while set."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: str | None = None

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self.refuse is not None and matches(self.refuse, topic):
            raise BusError(f"publish to {topic} refused")
        super().publish(topic, payload, retain=retain)


@asynccontextmanager
async def running(
    broker: MemoryBroker, data_dir: Path
) -> AsyncIterator[tuple[ControllerService, Bus]]:
    """The controller, and a bus that plays its clients and the health monitor."""
    controller = ControllerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance="c1"), data_dir
    )
    async with connected(broker, PREFIX, "me") as bus, serving(controller):
        await eventually(lambda: controller.bus.connected and controller.store is not None)
        yield controller, bus


def app(image: str = "shoal-test/echo:v1") -> dict[str, Any]:
    return {"name": "web", "image": image, "replicas": 2, "ports": {"http": 80}}


async def apply(bus: Bus, *apps: dict[str, Any]) -> Reply:
    return await bus.request(APPLY, ApplyCommand(apps=list(apps)), timeout=5)


async def test_apply_persists_publishes_and_replies(tmp_path: Path) -> None:
    async with running(MemoryBroker(), tmp_path) as (_, bus):
        apps = await bus.view(APPS)
        assert (await apply(bus, app())).revision == 1
        state = await eventually(lambda: apps.get(WEB))
        assert (state.revision, state.replicas) == (1, 2)
        assert SqliteStore(tmp_path / "controller.db").load()[WEB].state == state


async def test_a_failed_publication_is_retried_by_the_next_step(tmp_path: Path) -> None:
    broker = RefusingBroker()
    async with running(broker, tmp_path) as (controller, bus):
        apps = await bus.view(APPS)
        await apply(bus, app())
        first = await eventually(lambda: apps.get(WEB))
        await bus.publish(HEALTH, health(first))
        await eventually(lambda: WEB in controller.health)

        broker.refuse = APPS.topic(PREFIX, WEB)
        assert (await apply(bus, app("shoal-test/echo:v2"))).ok  # persisted: the answer is yes
        await bus.sync()
        assert apps[WEB].revision == 1
        assert WEB in controller.unpublished
        with pytest.raises(BusError):
            await controller._step(WEB)

        broker.refuse = None
        await controller._step(WEB)
        assert (await eventually(lambda: apps[WEB].revision == 2 and apps[WEB])).revision == 2
        assert not controller.unpublished


async def test_strays_on_the_apps_topic_are_cleared(tmp_path: Path) -> None:
    broker = MemoryBroker()
    async with running(broker, tmp_path) as (controller, bus):
        apps = await bus.view(APPS)
        await apply(bus, app())
        mine = await eventually(lambda: apps.get(WEB))
        # web's state under another app's topic: readers drop it as malformed, and the
        # controller (the only writer of apps/) clears it
        stray = APPS.topic(PREFIX, AppKey("default", "stray"))
        await bus.publish(APPS, mine, key=AppKey("default", "stray"))
        await bus.publish(APPS, mine)
        await eventually(lambda: stray not in broker.retained)
        await bus.sync()
        assert [t for t in broker.retained if matches(APPS.pattern(PREFIX), t)] == [
            APPS.topic(PREFIX, WEB)
        ]
        assert set(controller.retained) == {WEB}


async def test_a_stray_paged_value_is_cleared_with_its_pages(tmp_path: Path) -> None:
    broker = MemoryBroker()
    async with (
        running(broker, tmp_path) as (_, bus),
        connected(broker, PREFIX, "stray-writer", max_message=2048) as small,
    ):
        apps = await bus.view(APPS)
        big = {**app(), "env": {f"VAR{i}": "x" * 200 for i in range(30)}}
        await apply(bus, big)
        mine = await eventually(lambda: apps.get(WEB))
        stray = APPS.topic(PREFIX, AppKey("default", "stray"))
        await small.publish(APPS, mine, key=AppKey("default", "stray"))  # paged: > 2 KiB
        pages = paging.page_pattern(stray)
        await eventually(lambda: stray not in broker.retained)
        await bus.sync()
        assert not [t for t in broker.retained if matches(pages, t)]
        assert small.counters.paged == 1


async def test_a_handler_failure_still_gets_an_answer(tmp_path: Path) -> None:
    async with running(MemoryBroker(), tmp_path) as (controller, bus):
        apps = await bus.view(APPS)
        controller.db.close()  # every read of the store now fails
        reply = await apply(bus, app())
        [error] = reply.errors
        assert error.startswith("apply failed: SQLite store ")
        assert error.endswith(": Cannot operate on a closed database.")
        await bus.sync()
        assert WEB not in apps


@pytest.mark.parametrize(
    ("command", "kind", "body", "error"),
    [
        ("apply", "delete", {"name": "web"}, "a 'apply' command was expected"),
        ("scale", "scale", {"name": "web"}, "scale command: replicas: required"),
        ("rollout", "rollout", {"name": "web", "action": "x"}, "rollout command"),
    ],
)
async def test_bad_commands_get_errors(
    tmp_path: Path, command: str, kind: str, body: dict[str, Any], error: str
) -> None:
    async with running(MemoryBroker(), tmp_path) as (_, bus):
        env: Envelope = await bus.request_raw(f"{PREFIX}/cmd/{command}", kind, body, timeout=5)
        reply = env.open(Reply)
        assert not reply.ok
        assert reply.errors[0].startswith(error)


async def test_other_services_commands_are_left_alone(tmp_path: Path) -> None:
    async with running(MemoryBroker(), tmp_path) as (_, bus):
        with pytest.raises(RequestTimeout):
            await bus.request(NODE, NodeCommand(node="n", action="drain"), timeout=0.3)


async def test_apply_replies_and_history_never_show_credential_values(tmp_path: Path) -> None:
    """``shoal apply``/``diff`` print the reply's changes, ``rollout history`` the stored
    ones: a value named like a credential is in neither (nor in the stored revision)."""
    first = {**app(), "env": {"DB_PASSWORD": "hunter2", "DATABASE_URL": "postgres://u:pw1@db1/x"}}
    second = {**app(), "env": {"DB_PASSWORD": "horse", "DATABASE_URL": "postgres://u:pw2@db2/x"}}
    async with running(MemoryBroker(), tmp_path) as (_, bus):
        await apply(bus, first)
        reply = await apply(bus, second)
        history = await bus.request(HISTORY, HistoryQuery(namespace="default", name="web"))
    shown = [*reply.results[0].changes, *history.revisions[1].changes]
    assert "env.DB_PASSWORD: changed (value hidden)" in shown
    assert "env.DATABASE_URL: postgres://u:***@db1/x -> postgres://u:***@db2/x" in shown
    stored = SqliteStore(tmp_path / "controller.db").history(WEB)[1].changes
    assert not any(v in line for line in [*shown, *stored] for v in ("hunter2", "horse", "pw"))
