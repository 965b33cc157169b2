"""Commands carry their sender's user name as a topic level; answers go only to that
user's reply topics (on the in-memory broker: the ACL's part is tested on mosquitto)."""

from __future__ import annotations

import json

from core import codec
from core.bus import reply_to_allowed
from core.channels import APPLY
from core.codec import Envelope
from core.commands import ApplyCommand, Reply
from core.memory import MemoryBroker
from tests.support.memory import connected

PREFIX = "t"


async def _answering(server_bus: object, seen: list[str]) -> None:
    async def apply(body: ApplyCommand, env: Envelope) -> Reply:
        seen.append(env.user)
        return Reply(ok=True, errors=[env.user])

    await server_bus.answer(APPLY, apply)  # type: ignore[attr-defined]


async def test_a_request_goes_to_its_users_topic_and_the_answerer_sees_the_user() -> None:
    broker = MemoryBroker()
    seen: list[str] = []
    async with (
        connected(broker, PREFIX, "server") as server,
        connected(broker, PREFIX, "cli-1", user="alice") as alice,
        connected(broker, PREFIX, "scaler-x", src="scaler/x") as scaler,
    ):
        await _answering(server, seen)
        assert alice.reply_topic == "t/reply/alice/cli-1"
        assert APPLY.topic(PREFIX, alice.user) == "t/cmd/apply/alice"
        assert await alice.request(APPLY, ApplyCommand(apps=[])) == Reply(ok=True, errors=["alice"])
        # without a user name: the service name it says it is
        assert scaler.user == "scaler"
        await scaler.request(APPLY, ApplyCommand(apps=[]))
        assert seen == ["alice", "scaler"]


async def test_the_payload_cannot_claim_a_user_and_the_bare_topic_has_none() -> None:
    broker = MemoryBroker()
    seen: list[str] = []
    async with (
        connected(broker, PREFIX, "server") as server,
        connected(broker, PREFIX, "raw") as raw,
    ):
        await _answering(server, seen)
        answers: list[Envelope] = []
        await raw.watch(
            f"{PREFIX}/reply/#", lambda t, e: answers.append(e) if e else None, allow_json=True
        )
        claim = {"kind": "apply", "body": {"apps": []}, "user": "ops", "src": "ops"}
        payload = json.dumps({**claim, "reply_to": "t/reply/any/x"}).encode()
        await raw.publish_raw(APPLY.topic(PREFIX), payload)
        await raw.sync()
        await server.sync()
        await raw.sync()
        assert seen == [""]
        assert [a.body["errors"] for a in answers if a.kind == "reply"] == [[""]]


async def test_an_answer_never_goes_outside_the_requesters_reply_topics() -> None:
    broker = MemoryBroker()
    seen: list[str] = []
    async with (
        connected(broker, PREFIX, "server") as server,
        connected(broker, PREFIX, "mallory", user="mallory") as mallory,
        connected(broker, PREFIX, "victim", user="victim") as victim,
        connected(broker, PREFIX, "observer") as observer,
    ):
        await _answering(server, seen)
        got: list[str] = []
        await observer.watch(f"{PREFIX}/#", lambda t, e: got.append(t) if e else None)
        for reply_to in (victim.reply_topic, f"{PREFIX}/apps/default/web", "elsewhere"):
            env = mallory.envelope(APPLY.kind, {"apps": []}, reply_to=reply_to)
            await mallory.publish_raw(APPLY.topic(PREFIX, "mallory"), codec.encode(env))
        await mallory.sync()
        await server.sync()
        await observer.sync()
        assert seen == []  # a request naming someone else's topic is not even served
        assert server.counters.answered["apply", "refused"] == 3
        assert [t for t in got if t.startswith("t/reply/victim/") or "/apps/" in t] == []


def test_which_reply_topics_a_request_may_name() -> None:
    assert reply_to_allowed("t", "alice", "t/reply/alice/cli-1")
    assert not reply_to_allowed("t", "alice", "t/reply/bob/cli-1")
    assert not reply_to_allowed("t", "alice", "t/reply/alice/a/b")
    assert not reply_to_allowed("t", "alice", "t/reply/alice/")
    assert not reply_to_allowed("t", "alice", "t/apps/default/web")
    # the bare command topic (authorisation off): any reply topic of the prefix
    assert reply_to_allowed("t", "", "t/reply/json-1")
    assert reply_to_allowed("t", "", "t/reply/alice/cli-1")
    assert not reply_to_allowed("t", "", "t/apps/default/web")
    assert not reply_to_allowed("t", "", "t/reply/+")
