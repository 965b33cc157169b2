"""The bus client against real brokers: mosquitto and the embedded one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from core import codec
from core.bus import Bus, LastWill, connect_bus
from core.channels import APPLY, APPS, EVENTS, HISTORY, PRESENCE, WAKE
from core.codec import Envelope
from core.commands import ApplyCommand, History, HistoryQuery, Reply
from core.config import BrokerURL
from core.keys import AppKey, ServiceKey
from core.spec import AppSpec
from core.state import AppState, AppVersion, Event, Presence, WakeUp
from core.topics import Topics
from tests.support.procs import Broker

pytestmark = pytest.mark.integration

WEB = AppKey("default", "web")


def make_bus(broker: Broker, prefix: str, name: str, will: LastWill | None = None) -> Bus:
    return connect_bus(
        BrokerURL.parse(broker.url), Topics(prefix), client_id=f"{name}-{prefix}", will=will
    )


@asynccontextmanager
async def running(*buses: Bus) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(b.run()) for b in buses]
    try:
        for b in buses:
            await b.wait_connected(10)
        yield
    finally:
        for b in buses:
            b.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not met within {timeout:g}s"
        await asyncio.sleep(0.05)


def app_state(key: AppKey = WEB) -> AppState:
    spec = AppSpec(name=key.name, namespace=key.namespace, image="x:1")
    return AppState(
        namespace=key.namespace,
        name=key.name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=1,
        versions=[AppVersion(revision=1, spec=spec, replicas=1)],
    )


async def test_commands_are_answered_and_retained_values_fill_views(
    broker: Broker, prefix: str
) -> None:
    server, client = make_bus(broker, prefix, "server"), make_bus(broker, prefix, "client")

    async def apply(body: ApplyCommand, env: Envelope) -> Reply:
        return Reply(ok=True, revision=3)

    async def history_raw(topic: str, env: Envelope | None) -> None:
        assert env is not None
        await server.reply(env, "revisions", History(namespace="default", name="web", revision=2))

    await server.answer(APPLY, apply)
    await server.watch(HISTORY.pattern(prefix), history_raw)
    async with running(server, client):
        assert await client.request(APPLY, ApplyCommand(apps=[]), timeout=5) == Reply(
            ok=True, revision=3
        )
        answer = await client.request(HISTORY, HistoryQuery(name="web"), timeout=5)
        assert isinstance(answer, History)
        assert answer.revision == 2
        # command bodies are read strictly: an unknown field is refused, not ignored
        raw = await client.request_raw(APPLY.topic(prefix), "apply", {"apps": [], "bogus": 1}, 5)
        refused = raw.open(Reply)
        assert not refused.ok
        assert any("bogus" in e for e in refused.errors)

        await server.publish(APPS, app_state())
        changes: list[tuple[AppKey, bool]] = []
        view = await client.view(APPS, on_change=lambda k, v: changes.append((k, v is None)))
        await client.sync()
        assert view[WEB] == app_state()
        await server.clear(APPS, WEB)
        await client.sync()
        assert WEB not in view
        assert changes == [(WEB, False), (WEB, True)]


async def test_messages_that_do_not_fit_never_reach_handlers(broker: Broker, prefix: str) -> None:
    writer, reader = make_bus(broker, prefix, "writer"), make_bus(broker, prefix, "reader")
    topic = APPS.topic(prefix, WEB)
    other = AppKey("default", "api")
    misfits = [
        b"\xc1\xc1 not msgpack",
        b"\x00" * 64,
        codec.encode(codec.make("app", {"name": 5})),  # right kind, invalid body
        codec.encode(codec.make("health", {"namespace": "default", "name": "web"})),  # wrong kind
        codec.encode(codec.make("app", app_state(other))),  # names another key than its topic
        codec.encode_json(codec.make("app", app_state())),  # JSON on a msgpack channel
    ]
    seen: list[tuple[AppKey, AppState | None]] = []
    raw: list[str] = []
    wakes: list[WakeUp | None] = []
    async with running(writer, reader):
        for payload in misfits:  # retained: delivered to the subscription below
            await writer.publish_raw(topic, payload, retain=True)
        view = await reader.view(APPS)
        await reader.subscribe(APPS, lambda k, v: seen.append((k, v)))
        # the same filter as the view's: amqtt sends a message once per matching filter
        await reader.watch(APPS.pattern(prefix), lambda t, e: raw.append(e.kind) if e else None)
        await reader.subscribe(WAKE, lambda k, v: wakes.append(v))
        await reader.sync()
        for payload in misfits:  # live
            await writer.publish_raw(topic, payload)
        await writer.publish_raw(  # JSON is welcome where the channel says so
            WAKE.topic(prefix, WEB),
            codec.encode_json(codec.make("wake", WakeUp(namespace="default", name="web"))),
        )
        await writer.publish(APPS, app_state())
        await until(lambda: seen)
        await reader.sync()
        assert seen == [(WEB, app_state())]
        assert dict(view) == {WEB: app_state()}
        assert wakes == [WakeUp(namespace="default", name="web")]
        # a raw watcher sees every well-formed envelope, whatever its body
        assert raw == ["app", "health", "app", "app"]
        await writer.clear(APPS, WEB)


async def test_reconnects_and_resubscribes_after_broker_restart(
    broker: Broker, prefix: str
) -> None:
    got: list[str] = []
    sub, pub = make_bus(broker, prefix, "sub"), make_bus(broker, prefix, "pub")
    await sub.subscribe(EVENTS, lambda k, e: got.append(e.message) if e else None, key="x")
    async with running(sub, pub):
        await asyncio.to_thread(broker.restart)
        await sub.wait_connected(15)
        await pub.wait_connected(15)
        for _ in range(50):
            await pub.publish(EVENTS, Event(kind="x", message="after"))
            if got:
                break
            await asyncio.sleep(0.1)
        assert got
        assert got[-1] == "after"
        assert sub.connects >= 2


async def test_last_will_is_published_when_a_client_dies(broker: Broker, prefix: str) -> None:
    key = ServiceKey("x", "y")
    will_topic = PRESENCE.topic(prefix, key)
    offline = Presence(service="x", instance="y", status="offline")
    watcher = make_bus(broker, prefix, "watcher")
    seen: list[tuple[ServiceKey, Presence | None]] = []
    await watcher.subscribe(PRESENCE, lambda k, v: seen.append((k, v)))
    # a bus that closes cleanly does not leave its will behind
    not_sent = Presence(service="x", instance="y", status="offline", host="closed cleanly")
    clean_will = LastWill(will_topic, codec.encode(codec.make("presence", not_sent)))
    clean = make_bus(broker, prefix, "clean", clean_will)
    # a raw paho client that we can drop without DISCONNECT
    import paho.mqtt.client as mqtt

    dying = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dying-{prefix}")
    dying.will_set(will_topic, codec.encode(codec.make("presence", offline)), qos=1, retain=True)
    dying.keepalive = 1  # type: ignore[attr-defined]
    async with running(watcher):
        async with running(clean):
            pass
        await asyncio.to_thread(dying.connect, broker.host, broker.port, 1)
        await asyncio.to_thread(dying.loop, 0.5)
        dying.socket().close()  # type: ignore[union-attr]  # vanish without DISCONNECT
        await until(lambda: seen)
        await watcher.sync()
        assert seen == [(key, offline)]
