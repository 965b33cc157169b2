"""Controllers in HA on the in-memory broker: one leads and answers, a standby answers,
writes and clears nothing; a crashed leader's standby takes over the shared store; a
controller on an empty store never clears what another store wrote; a fenced leader's write
fails, it resigns and is elected again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from core import codec
from core.bus import Bus
from core.channels import APPLY, APPS
from core.codec import Envelope
from core.commands import ApplyCommand, Reply
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from core.topics import matches
from services.controller.service import ControllerService
from services.controller.store_sqlite import SqliteStore
from tests.support.memory import connected, serving
from tests.support.waiting import eventually

PREFIX = "t"


def app(name: str) -> dict[str, Any]:
    return {"name": name, "image": "shoal-test/echo:v1", "replicas": 1}


def controller(broker: MemoryBroker, instance: str, data_dir: Path) -> ControllerService:
    return ControllerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance=instance), data_dir
    )


class Replies:
    """Every reply sent to this client, whoever sent it."""

    def __init__(self) -> None:
        self.seen: list[Envelope] = []

    async def watch(self, bus: Bus) -> None:
        async def on_reply(topic: str, env: Envelope | None) -> None:
            if env is not None and env.re is not None:
                self.seen.append(env)

        await bus.watch(f"{PREFIX}/reply/#", on_reply)

    def to(self, request_id: str) -> list[Envelope]:
        return [e for e in self.seen if e.re == request_id]


async def apply(bus: Bus, replies: Replies, name: str) -> tuple[Reply, str]:
    """Apply one app; the reply and who sent it (after a sync: every reply is in)."""
    env = bus.envelope(APPLY.kind, ApplyCommand(apps=[app(name)]))
    env = env.model_copy(update={"reply_to": f"{PREFIX}/reply/me-watched"})
    await bus.publish_raw(APPLY.topic(PREFIX), codec.encode(env), qos=1)
    [answer] = await eventually(lambda: replies.to(env.id), message="a reply")
    await bus.sync()
    assert len(replies.to(env.id)) == 1, replies.to(env.id)
    return answer.open(Reply), answer.src


def retained_apps(broker: MemoryBroker) -> set[str]:
    return {t for t in broker.retained if matches(APPS.pattern(PREFIX), t)}


@asynccontextmanager
async def cluster(broker: MemoryBroker) -> AsyncIterator[tuple[Bus, Replies, AsyncExitStack]]:
    async with connected(broker, PREFIX, "me") as bus, AsyncExitStack() as stack:
        replies = Replies()
        await replies.watch(bus)
        yield bus, replies, stack


async def test_the_leader_answers_and_a_standby_takes_over_when_it_crashes(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    async with cluster(broker) as (bus, replies, stack):
        first = await stack.enter_async_context(serving(controller(broker, "c1", tmp_path)))
        await eventually(lambda: first.serving, message="c1 leads")
        second = await stack.enter_async_context(serving(controller(broker, "c2", tmp_path)))
        await eventually(lambda: second.bus.connected and second.leadership.leader == "c1")

        reply, src = await apply(bus, replies, "a")
        assert reply.ok
        assert src == "controller/c1"
        # an invalid command too gets one answer, the leader's (the standby ignores it)
        bad = bus.envelope(APPLY.kind, {"apps": [], "bogus": 1}, reply_to=f"{PREFIX}/reply/w")
        await bus.publish_raw(APPLY.topic(PREFIX), codec.encode(bad), qos=1)
        [refused] = await eventually(lambda: replies.to(bad.id))
        await bus.sync()
        assert len(replies.to(bad.id)) == 1
        assert refused.src == "controller/c1"
        assert not refused.open(Reply).ok
        assert not second.serving
        assert not second.is_leader()

        broker.crash(first.bus.client_id)  # kill -9: its last will says offline
        await eventually(lambda: second.serving, message="c2 takes over")
        assert second.store is not None
        assert first.store is not None
        assert second.store.term == 2
        reply, src = await apply(bus, replies, "b")
        assert reply.ok
        assert src == "controller/c2"
        assert set(second.apps) == {AppKey("default", "a"), AppKey("default", "b")}

        # the old leader reconnects: it gave up its claim and stands by
        await eventually(lambda: first.bus.connected and first.leadership.leader == "c2")
        assert not first.serving
        reply, src = await apply(bus, replies, "c")
        assert src == "controller/c2"
        assert len(retained_apps(broker)) == 3


async def test_a_controller_on_an_empty_store_clears_nothing(tmp_path: Path) -> None:
    broker = MemoryBroker()
    async with cluster(broker) as (bus, replies, stack):
        first = await stack.enter_async_context(serving(controller(broker, "c1", tmp_path / "a")))
        await eventually(lambda: first.serving)
        for name in ("a", "b", "c"):
            assert (await apply(bus, replies, name))[0].ok
        before = dict(broker.retained)
        second = await stack.enter_async_context(serving(controller(broker, "c2", tmp_path / "b")))
        await eventually(lambda: second.leadership.leader == "c1" and len(second.retained) == 3)
        await bus.sync()
        assert {t: before[t] for t in retained_apps(broker)} == {
            t: v for t, v in before.items() if t in retained_apps(broker)
        }
        assert len(retained_apps(broker)) == 3

        # even as the leader, on its own empty store, it leaves the other store's apps alone
        broker.crash(first.bus.client_id)
        await eventually(lambda: second.serving)
        await eventually(lambda: second._republishing is not None and second._republishing.done())
        await bus.sync()
        assert len(retained_apps(broker)) == 3


async def test_a_fenced_leader_fails_the_write_resigns_and_is_elected_again(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    async with cluster(broker) as (bus, replies, stack):
        only = await stack.enter_async_context(serving(controller(broker, "c1", tmp_path)))
        await eventually(lambda: only.serving)
        assert (await apply(bus, replies, "a"))[0].ok
        intruder = SqliteStore(tmp_path / "controller.db")
        intruder.take_over("elsewhere")  # term 2: c1 (term 1) is deposed in the store

        reply, _ = await apply(bus, replies, "b")
        assert not reply.ok
        assert "another controller leads" in reply.errors[0]
        assert intruder.keys() == {AppKey("default", "a")}  # nothing written
        # c1 resigned; alone in the election, it takes over again with a new term
        await eventually(lambda: only.serving and only.store is not None and only.store.term == 3)
        assert (await apply(bus, replies, "b"))[0].ok
        assert intruder.keys() == {AppKey("default", "a"), AppKey("default", "b")}
