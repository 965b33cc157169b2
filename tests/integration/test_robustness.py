"""Bad input on every topic never takes a service down (issue 3).

Every service runs as a real process on a real broker (both kinds); the test publishes
garbage, wrong kinds, invalid bodies and JSON on state topics on every topic any service
reads, then checks that every process is alive, still present on the bus, and still works.
"""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest

from core import codec
from core.channels import APPLY, PRESENCE
from core.commands import ApplyCommand, Reply
from tests.support.net import free_port
from tests.support.observer import Observer
from tests.support.procs import Broker, ProcGroup

pytestmark = pytest.mark.integration

SERVICES = ("controller", "scheduler", "health", "balancer", "scaler")


def garbage_payloads() -> list[bytes]:
    return [
        b"\xc1\xc1 not msgpack",
        b"{ not json",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"v": 99, "kind": "app", "body": {}}),
        codec.encode(codec.make("app", {"name": 5})),  # right kind, invalid body
        codec.encode(codec.make("nonsense", {"x": 1})),  # unknown kind
        json.dumps({"kind": "apply", "body": {"apps": "not a list"}}).encode(),
        json.dumps({"kind": "apply", "body": {"apps": [{"name": 1}]}, "reply_to": "x"}).encode(),
        b"\x00" * 64,
        b"\x81\x90\x00",  # a map keyed by a list: unhashable in Python
    ]


def topics_to_poison(prefix: str) -> list[str]:
    p = prefix
    return [
        f"{p}/cmd/apply",
        f"{p}/cmd/delete",
        f"{p}/cmd/scale",
        f"{p}/cmd/rollback",
        f"{p}/cmd/node",
        f"{p}/apps/default/bad",
        f"{p}/nodes/bad/info",
        f"{p}/nodes/bad/assign",
        f"{p}/nodes/bad/replicas",
        f"{p}/health/default/bad",
        f"{p}/metrics/lb/bad",
        f"{p}/metrics/nodes/bad",
        f"{p}/wake/default/bad",
        f"{p}/services/bad/x",
        f"{p}/events/bad",
    ]


async def test_malformed_payloads_on_every_topic_leave_every_service_running(
    broker: Broker, procs: ProcGroup, prefix: str
) -> None:
    started = {}
    for name in SERVICES:
        args: list[str] = []
        if name == "controller":
            args = ["--data-dir", str(procs.workdir / "data")]
        if name == "balancer":
            args = ["--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}"]
        started[name] = procs.service(name, broker.url, *args, prefix=prefix)

    async with Observer(broker.url, prefix) as obs:

        def online() -> bool:
            seen = {p.service for p in obs.values(PRESENCE).values() if p.status == "online"}
            return set(SERVICES) <= seen

        await obs.wait_for(online, 30, "every service online")
        for topic in topics_to_poison(prefix):
            for payload in garbage_payloads():
                for retain in (False, True):
                    await obs.bus.publish_raw(topic, payload, retain=retain)
        await asyncio.sleep(2)
        for topic in topics_to_poison(prefix):
            await obs.bus.clear_raw(topic)

        dead = [n for n, p in started.items() if not p.alive()]
        assert not dead, f"died: {dead}\n{procs.dump()}"
        assert online()
        # And they still work: a command round trip through the controller.
        reply = await obs.bus.request(
            APPLY, ApplyCommand(apps=[{"name": "ok", "image": "x"}], dry_run=True), timeout=10
        )
        assert isinstance(reply, Reply)
        assert reply.ok
