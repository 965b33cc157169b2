"""The bus's semantics, on the in-memory broker: typed channels, views, commands, skew, faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from core import codec
from core.bus import LastWill
from core.channels import APPLY, APPS, HEALTH, NODE_INFO, PRESENCE, SCALE
from core.codec import Envelope
from core.commands import ApplyCommand, Reply, ScaleCommand
from core.errors import SpecError
from core.keys import AppKey, ServiceKey
from core.memory import MemoryBroker
from core.spec import AppSpec, Resources
from core.state import AppHealth, AppState, AppVersion, NodeInfo, Presence, ReplicaHealth
from tests.support.memory import connected
from tests.support.waiting import eventually

PREFIX = "t"


def app_state(namespace: str = "default", name: str = "web") -> AppState:
    spec = AppSpec(name=name, namespace=namespace, image="x:1")
    return AppState(
        namespace=namespace,
        name=name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=1,
        versions=[AppVersion(revision=1, spec=spec, replicas=1)],
    )


def health(name: str = "web", ready: bool = True) -> AppHealth:
    replica = ReplicaHealth(id="r1", revision=1, node="n1", endpoint="127.0.0.1:1", ready=ready)
    return AppHealth(namespace="default", name=name, replicas=[replica])


async def test_views_get_retained_values_and_follow_changes() -> None:
    broker = MemoryBroker()
    async with (
        connected(broker, PREFIX, "writer") as writer,
        connected(broker, PREFIX, "reader") as reader,
    ):
        await writer.publish(HEALTH, health("web"))
        changes: list[tuple[AppKey, AppHealth | None]] = []
        view = await reader.view(HEALTH, on_change=lambda k, v: changes.append((k, v)))
        await reader.sync()
        assert view[AppKey("default", "web")] == health("web")  # retained, arrived on subscribe
        await writer.publish(HEALTH, health("api", ready=False))
        await writer.clear(HEALTH, AppKey("default", "web"))
        await reader.sync()
        assert list(view) == [AppKey("default", "api")]
        assert [(str(k), v is None) for k, v in changes] == [
            ("default/web", False),
            ("default/api", False),
            ("default/web", True),
        ]


async def test_one_key_and_fixed_levels() -> None:
    broker = MemoryBroker()
    async with connected(broker, PREFIX, "a") as a, connected(broker, PREFIX, "b") as b:
        node = NodeInfo(node="n2", address="127.0.0.2", capacity=Resources(cpu=1, memory="1Gi"))
        mine = await b.view(NODE_INFO, key="n1")
        theirs = await b.view(PRESENCE, service="scheduler")
        await a.publish(NODE_INFO, node)
        await a.publish(PRESENCE, Presence(service="scheduler", instance="s1"))
        await a.publish(PRESENCE, Presence(service="health", instance="h1"))
        await b.sync()
        assert dict(mine) == {}
        assert list(theirs) == [ServiceKey("scheduler", "s1")]


async def test_messages_that_do_not_fit_are_dropped_and_the_reader_goes_on() -> None:
    broker = MemoryBroker()
    async with connected(broker, PREFIX, "a") as a, connected(broker, PREFIX, "b") as b:
        view = await b.view(HEALTH)
        topic = HEALTH.topic(PREFIX, AppKey("default", "web"))
        # another app's body under this topic, another kind, garbage, an invalid body
        await a.publish_raw(topic, codec.encode(codec.make("health", health("api"))))
        await a.publish_raw(topic, codec.encode(codec.make("app", app_state())))
        await a.publish_raw(topic, b"\xc1 not msgpack")
        await a.publish_raw(topic, codec.encode(codec.make("health", {"namespace": 1})))
        await a.publish(HEALTH, health("web"))
        await b.sync()
        assert dict(view) == {AppKey("default", "web"): health("web")}


async def test_a_newer_peer_s_fields_are_ignored_at_any_depth() -> None:
    broker = MemoryBroker()
    async with connected(broker, PREFIX, "a") as a, connected(broker, PREFIX, "b") as b:
        view = await b.view(APPS)
        body = app_state().model_dump(mode="json")
        body["shard"] = 7
        body["spec"]["gpu"] = {"count": 1}
        body["versions"][0]["spec"]["gpu"] = {"count": 1}
        await a.publish_raw(
            APPS.topic(PREFIX, AppKey("default", "web")),
            codec.encode(codec.make("app", body)),
            retain=True,
        )
        await b.sync()
        assert view[AppKey("default", "web")] == app_state()


async def test_commands_are_answered_and_their_bodies_read_strictly() -> None:
    broker = MemoryBroker()
    async with (
        connected(broker, PREFIX, "server") as server,
        connected(broker, PREFIX, "client") as client,
    ):

        async def apply(body: ApplyCommand, env: Envelope) -> Reply:
            if not body.apps:
                raise SpecError(["apps: at least one app is needed"])
            return Reply(ok=True, revision=len(body.apps))

        async def scale(body: ScaleCommand, env: Envelope) -> Reply:
            raise RuntimeError("boom")

        await server.answer(APPLY, apply)
        await server.answer(SCALE, scale)
        assert await client.request(APPLY, ApplyCommand(apps=[{}, {}])) == Reply(
            ok=True, revision=2
        )
        refused = await client.request(APPLY, ApplyCommand(apps=[]))
        assert refused == Reply(ok=False, errors=["apps: at least one app is needed"])
        crashed = await client.request(SCALE, ScaleCommand(name="web", replicas=1))
        assert isinstance(crashed, Reply)
        assert crashed.errors == ["scale failed: internal error: boom"]
        # an unknown field in a command body is an error, not ignored
        raw = await client.request_raw(APPLY.topic(PREFIX), "apply", {"apps": [], "dryrun": True})
        answer = raw.open(Reply)
        assert not answer.ok
        assert any("dryrun" in e for e in answer.errors)
        wrong_kind = (await client.request_raw(APPLY.topic(PREFIX), "scale", {})).open(Reply)
        assert wrong_kind.errors == ["a 'apply' command was expected on t/cmd/apply, got 'scale'"]


async def test_last_will_on_a_crash_not_on_a_clean_close() -> None:
    broker = MemoryBroker()
    will = LastWill(
        PRESENCE.topic(PREFIX, ServiceKey("agent", "a1")),
        codec.encode(
            codec.make("presence", Presence(service="agent", instance="a1", status="offline"))
        ),
    )
    async with connected(broker, PREFIX, "watcher") as watcher:
        seen = await watcher.view(PRESENCE)
        async with connected(broker, PREFIX, "clean", will=will):
            pass
        await watcher.sync()
        assert dict(seen) == {}
        async with connected(broker, PREFIX, "crashing", will=will):
            broker.crash("crashing")
            await watcher.sync()
            assert seen[ServiceKey("agent", "a1")].status == "offline"


async def test_a_broker_restart_is_survived_and_state_rebuilt() -> None:
    broker = MemoryBroker()
    hooks: list[int] = []
    async with connected(broker, PREFIX, "a") as a, connected(broker, PREFIX, "b") as b:
        view = await b.view(HEALTH)

        async def on_connect() -> None:
            hooks.append(b.connects)

        b.on_connect(on_connect)
        await a.publish(HEALTH, health("web"))
        await b.sync()
        broker.stop()
        await eventually(lambda: not a.connected and not b.connected)
        broker.retained.clear()  # a broker that lost its state...
        broker.start()
        await eventually(lambda: a.connected and b.connected)
        await a.publish(HEALTH, health("api"))  # ...and is written again after reconnecting
        await eventually(lambda: AppKey("default", "api") in view)
        assert hooks == [2]


async def test_sync_waits_for_every_handler_before_it() -> None:
    broker = MemoryBroker()
    handled: list[str] = []
    release = asyncio.Event()

    async def slow(key: AppKey, value: AppHealth | None) -> None:
        await release.wait()
        handled.append(str(key))

    async with connected(broker, PREFIX, "a") as a, connected(broker, PREFIX, "b") as b:
        await b.subscribe(HEALTH, slow)
        await a.publish(HEALTH, health("web"))
        syncing: Awaitable[None] = asyncio.ensure_future(b.sync())
        await asyncio.sleep(0.01)
        assert not handled
        release.set()
        await syncing
        assert handled == ["default/web"]
