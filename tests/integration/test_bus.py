"""The bus client against real brokers: mosquitto and the embedded one."""

from __future__ import annotations

import asyncio

import pytest

from core.bus import Bus, LastWill
from core.commands import Reply
from core.config import BrokerURL
from core.topics import Topics
from tests.support.procs import Broker

pytestmark = pytest.mark.integration


def make_bus(broker: Broker, prefix: str, name: str, will: LastWill | None = None) -> Bus:
    return Bus(BrokerURL.parse(broker.url), Topics(prefix), client_id=f"{name}-{prefix}", will=will)


async def test_request_reply_and_retained_cache(broker: Broker, prefix: str) -> None:
    topics = Topics(prefix)
    server, client = make_bus(broker, prefix, "server"), make_bus(broker, prefix, "client")

    async def answer(topic: str, env: object) -> None:
        await server.reply(env, "reply", Reply(ok=True, revision=3))  # type: ignore[arg-type]

    await server.subscribe(topics.all_commands, answer, allow_json=True)
    tasks = [asyncio.create_task(b.run()) for b in (server, client)]
    try:
        await server.wait_connected(10)
        await client.wait_connected(10)
        reply = await client.request(topics.cmd("apply"), "apply", {"apps": []}, timeout=5)
        assert reply.open(Reply).revision == 3

        await server.publish(topics.app("default", "web"), "app", {"n": 1}, retain=True)
        await client.subscribe(topics.all_apps, lambda t, e: None, cache=True)
        await client.sync()
        assert topics.app("default", "web") in client.cache
        await server.clear(topics.app("default", "web"))
        await client.sync()
        assert topics.app("default", "web") not in client.cache
    finally:
        for b in (server, client):
            b.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_reconnects_and_resubscribes_after_broker_restart(
    broker: Broker, prefix: str
) -> None:
    topics = Topics(prefix)
    got: list[str] = []
    sub, pub = make_bus(broker, prefix, "sub"), make_bus(broker, prefix, "pub")
    await sub.subscribe(topics.event("x"), lambda t, e: got.append(e.body["message"]))
    tasks = [asyncio.create_task(b.run()) for b in (sub, pub)]
    try:
        await sub.wait_connected(10)
        await pub.wait_connected(10)
        await asyncio.to_thread(broker.restart)
        await sub.wait_connected(15)
        await pub.wait_connected(15)
        for _ in range(50):
            await pub.publish(topics.event("x"), "event", {"kind": "x", "message": "after"})
            if got:
                break
            await asyncio.sleep(0.1)
        assert got
        assert got[-1] == "after"
        assert sub.connects >= 2
    finally:
        for b in (sub, pub):
            b.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_last_will_is_published_when_a_client_dies(broker: Broker, prefix: str) -> None:
    topics = Topics(prefix)
    will_topic = topics.service("x", "y")
    watcher = make_bus(broker, prefix, "watcher")
    seen: list[bytes] = []
    await watcher.subscribe(will_topic, lambda t, e: seen.append(e.kind.encode() if e else b""))
    w_task = asyncio.create_task(watcher.run())
    # a raw paho client that we can drop without DISCONNECT
    import paho.mqtt.client as mqtt

    from core import codec

    dying = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dying-{prefix}")
    dying.will_set(
        will_topic, codec.encode(codec.make("presence", {"service": "x"})), qos=1, retain=True
    )
    dying.keepalive = 1  # type: ignore[attr-defined]
    try:
        await watcher.wait_connected(10)
        await asyncio.to_thread(dying.connect, broker.host, broker.port, 1)
        await asyncio.to_thread(dying.loop, 0.5)
        dying.socket().close()  # type: ignore[union-attr]  # vanish without DISCONNECT
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.1)
        assert seen == [b"presence"]
    finally:
        watcher.close()
        w_task.cancel()
        await asyncio.gather(w_task, return_exceptions=True)
