"""Hostile payloads on the bus: refused by the codec, never the end of a receive loop."""

from __future__ import annotations

import msgpack
import pytest

from core import codec
from core.bus import Bus
from core.channels import APPLY, HEALTH
from core.codec import Envelope
from core.commands import ApplyCommand, Reply
from core.keys import AppKey
from core.memory import MemoryBroker
from core.state import AppHealth
from tests.support.memory import connected

PREFIX = "t"
ANY_SIZE = 256 * 1024 * 1024

DEEP_JSON = b'{"kind":"reply","body":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
DEEP_MSGPACK = b"\x81\xa4body" + b"\x91" * 100_000 + b"\xc0"
HOSTILE = [
    DEEP_JSON,
    DEEP_MSGPACK,
    b"{" * 200_000,
    b"\x91" * 200_000,
    b"\x00" * (codec.MAX_PAYLOAD + 1),
    msgpack.packb({"kind": "reply", "body": {"x": "y" * codec.MAX_PAYLOAD}}),
]


async def _answering(server: Bus) -> None:
    async def apply(body: ApplyCommand, env: Envelope) -> Reply:
        return Reply(ok=True, revision=len(body.apps))

    await server.answer(APPLY, apply)


@pytest.mark.parametrize("payload", HOSTILE, ids=lambda p: f"{len(p)}B-{p[:2]!r}")
async def test_a_hostile_reply_leaves_the_client_working(payload: bytes) -> None:
    broker = MemoryBroker()
    async with (
        connected(broker, PREFIX, "server") as server,
        connected(broker, PREFIX, "victim") as victim,
        # an attacker's client does not keep to the broker's limit (the memory broker has none)
        connected(broker, PREFIX, "attacker", max_message=ANY_SIZE) as attacker,
    ):
        await _answering(server)
        await attacker.publish_raw(victim.reply_topic, payload)
        assert await victim.request(APPLY, ApplyCommand(apps=[{}])) == Reply(ok=True, revision=1)


@pytest.mark.parametrize("payload", HOSTILE, ids=lambda p: f"{len(p)}B-{p[:2]!r}")
async def test_a_hostile_state_message_leaves_views_and_commands_working(payload: bytes) -> None:
    broker = MemoryBroker()
    async with (
        connected(broker, PREFIX, "server") as server,
        connected(broker, PREFIX, "reader") as reader,
        # an attacker's client does not keep to the broker's limit (the memory broker has none)
        connected(broker, PREFIX, "attacker", max_message=ANY_SIZE) as attacker,
    ):
        await _answering(server)
        view = await reader.view(HEALTH)
        await attacker.publish_raw(HEALTH.topic(PREFIX, AppKey("default", "web")), payload)
        await attacker.publish_raw(APPLY.topic(PREFIX), payload)
        good = AppHealth(namespace="default", name="api")
        await attacker.publish(HEALTH, good)
        await reader.sync()
        assert dict(view) == {AppKey("default", "api"): good}
        assert await reader.request(APPLY, ApplyCommand(apps=[{}])) == Reply(ok=True, revision=1)


@pytest.mark.parametrize(
    "target",
    ["t/apps/default/web", "t/nodes/n1/assign", "t/reply", "t/reply/+", "t/reply/a/#", "x/reply/a"],
)
async def test_a_request_whose_reply_to_is_no_reply_topic_is_refused(target: str) -> None:
    """The answerer publishes only on ``<prefix>/reply/<client>``: a request asking for its
    answer elsewhere (a forged state message under the server's identity) is not served."""
    broker = MemoryBroker()
    served: list[int] = []
    published: list[tuple[str, Envelope | None]] = []
    async with (
        connected(broker, PREFIX, "server") as server,
        connected(broker, PREFIX, "attacker") as attacker,
        connected(broker, PREFIX, "client") as client,
    ):

        async def apply(body: ApplyCommand, env: Envelope) -> Reply:
            served.append(len(body.apps))
            return Reply(ok=True, revision=len(body.apps))

        await server.answer(APPLY, apply)

        async def seen(topic: str, env: Envelope | None) -> None:
            published.append((topic, env))

        await attacker.watch("#", seen, allow_json=True)
        forged = attacker.envelope(APPLY.kind, ApplyCommand(apps=[{}]), reply_to=target)
        await attacker.publish_raw(APPLY.topic(PREFIX), codec.encode(forged))
        assert await client.request(APPLY, ApplyCommand(apps=[{}, {}])) == Reply(
            ok=True, revision=2
        )
        await attacker.sync()
    assert served == [2]
    assert [t for t, env in published if env is not None and env.re == forged.id] == []
    assert server.counters.answered[APPLY.name, "refused"] == 1
