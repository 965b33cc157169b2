"""One bad stored app never stops the others: a row that does not read back, or a record
the bus cannot carry, is logged and skipped; every other app is served and republished,
and the bad one's retained value is not cleared."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import codec
from core.bus import Bus
from core.channels import APPLY, APPS, DELETE, HISTORY
from core.commands import ApplyCommand, DeleteCommand, HistoryQuery, Reply
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from services.controller.apps import AppRecord
from services.controller.service import ControllerService
from services.controller.store_sqlite import SqliteStore
from tests.support.memory import connected, serving
from tests.support.waiting import eventually
from tests.unit.controller.helpers import created, spec

PREFIX = "t"


def seed(path: Path) -> dict[str, AppRecord]:
    """Four apps in the store: two fine, one unreadable, one too big for the bus."""
    store = SqliteStore(path)
    store.take_over("seed")
    records = {n: created(spec(name=n)) for n in ("a", "broken", "huge", "z")}
    with store.transaction() as tx:
        for name, record in records.items():
            if name == "huge":
                record = AppRecord(record.state.model_copy(update={"replicas": 2**70}))
            records[name] = tx.put(record)
    store._execute("UPDATE apps SET state = '{\"nope\": ' WHERE name = 'broken'")
    store.close()
    return records


async def test_one_bad_stored_app_never_stops_the_others(tmp_path: Path) -> None:
    records = seed(tmp_path / "controller.db")
    broker = MemoryBroker()
    # the bad apps were published before (by an earlier version): they must stay
    for name in ("broken", "huge"):
        ok = created(spec(name=name)).state.model_copy(
            update={"store_id": records["a"].state.store_id, "store_seq": 1}
        )
        broker.publish(APPS.topic(PREFIX, ok.key), codec.encode(codec.make("app", ok)), retain=True)
    controller = ControllerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance="c1"), tmp_path
    )
    async with connected(broker, PREFIX, "me") as bus, serving(controller):
        apps = await bus.view(APPS)
        await eventually(lambda: controller._republishing and controller._republishing.done())
        await bus.sync()
        assert apps[AppKey("default", "a")] == records["a"].state
        assert apps[AppKey("default", "z")] == records["z"].state
        assert AppKey("default", "broken") in apps  # not cleared
        assert AppKey("default", "huge") in apps
        assert AppKey("default", "broken") in controller.broken
        await served(bus, "z")


async def served(bus: Bus, name: str) -> None:
    answer = await bus.request(HISTORY, HistoryQuery(name=name), timeout=5)
    assert getattr(answer, "name", None) == name


async def test_a_record_the_bus_refuses_is_skipped_by_the_republish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "controller.db")
    store.take_over("seed")
    with store.transaction() as tx:
        for name in ("a", "b", "c"):
            tx.put(created(spec(name=name)))
    store.close()
    real = codec.encode

    def encode(env: codec.Envelope) -> bytes:
        if env.kind == "app" and env.body.get("name") == "b":
            raise OverflowError("int too big to convert")
        return real(env)

    monkeypatch.setattr(codec, "encode", encode)
    broker = MemoryBroker()
    controller = ControllerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance="c1"), tmp_path
    )
    async with connected(broker, PREFIX, "me") as bus, serving(controller):
        apps = await bus.view(APPS)
        await eventually(lambda: controller._republishing and controller._republishing.done())
        await bus.sync()
        assert set(apps) == {AppKey("default", "a"), AppKey("default", "c")}


async def test_an_unreadable_app_can_be_deleted(tmp_path: Path) -> None:
    seed(tmp_path / "controller.db")
    broker = MemoryBroker()
    controller = ControllerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance="c1"), tmp_path
    )
    async with connected(broker, PREFIX, "me") as bus, serving(controller):
        await eventually(lambda: controller.serving)
        reply = await bus.request(DELETE, DeleteCommand(name="broken"), timeout=5)
        assert isinstance(reply, Reply)
        assert reply.ok
        assert [(r.revision, r.change) for r in reply.results] == [(0, "deleted")]
        assert AppKey("default", "broken") not in controller.broken
        stored = controller.db.keys()
        assert AppKey("default", "broken") not in stored


async def test_an_apply_the_bus_cannot_carry_is_refused_and_nothing_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = codec.encode

    def encode(env: codec.Envelope) -> bytes:
        if env.kind == "app" and env.body.get("name") == "b":
            raise OverflowError("int too big to convert")
        return real(env)

    monkeypatch.setattr(codec, "encode", encode)
    broker = MemoryBroker()
    controller = ControllerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance="c1"), tmp_path
    )
    async with connected(broker, PREFIX, "me") as bus, serving(controller):
        await eventually(lambda: controller.serving)
        apps = [spec(name=n).model_dump(mode="json", exclude_defaults=True) for n in ("a", "b")]
        reply = await bus.request(APPLY, ApplyCommand(apps=apps), timeout=5)
        assert isinstance(reply, Reply)
        assert not reply.ok
        assert reply.errors == [
            "app default/b cannot be encoded for the bus: int too big to convert"
        ]
        assert controller.db.keys() == set()  # the whole batch: nothing stored
