"""Values larger than a broker message: split into pages, assembled whole, never mixed."""

from __future__ import annotations

import random

import pytest

from core import codec, paging
from core.channels import APPLY, NODE_ASSIGN, NODE_INFO
from core.commands import ApplyCommand, Reply
from core.errors import MessageTooLarge
from core.memory import MemoryBroker
from core.spec import AppSpec, Resources
from core.state import AssignedReplica, NodeAssignment, NodeInfo
from tests.support.memory import connected

PREFIX = "t"
LIMIT = 8 * 1024  # a small broker limit, so that a few hundred replicas need pages


def assignment(replicas: int, node: str = "n1", generation: int = 1) -> NodeAssignment:
    spec = AppSpec(name="web", namespace="default", image="x:1")
    return NodeAssignment(
        node=node,
        generation=generation,
        replicas=[
            AssignedReplica(id=f"default.web.{i:08x}", namespace="default", app="web", revision=1)
            for i in range(replicas)
        ],
        specs={"default/web@1": spec},
    )


# -- pure: split and assemble ------------------------------------------------------------


def test_split_pages_fit_the_limit_and_assemble_in_any_order() -> None:
    payload = random.Random(1).randbytes(100_000)
    head, pages = paging.split(payload, LIMIT)
    assert head.pages == len(pages) > 1
    assert head.size == len(payload)
    for page in pages:
        assert len(codec.encode(codec.make(paging.PAGE_KIND, page))) <= LIMIT
    order = list(range(len(pages)))
    random.Random(2).shuffle(order)
    asm = paging.Assembler()
    assert asm.head("t/x", head) is None  # no page yet
    got = [asm.page("t/x", i, pages[i]) for i in order]
    assert got[:-1] == [None] * (len(pages) - 1)
    assert got[-1] == payload
    assert asm.page("t/x", 0, pages[0]) is None  # a duplicate delivers nothing more


def test_pages_before_their_head_and_a_newer_value_never_mix_with_the_old() -> None:
    old = b"o" * 30_000
    new = b"n" * 30_000
    old_head, old_pages = paging.split(old, LIMIT)
    new_head, new_pages = paging.split(new, LIMIT)
    asm = paging.Assembler()
    for i, page in enumerate(old_pages):
        asm.page("t/x", i, page)
    assert asm.head("t/x", old_head) == old
    # the writer overwrites the pages one by one, then the head: nothing mixed comes out
    for i, page in enumerate(new_pages[:-1]):
        assert asm.page("t/x", i, page) is None
    assert asm.page("t/x", len(new_pages) - 1, new_pages[-1]) is None  # head still old
    assert asm.head("t/x", new_head) == new


def test_a_head_seen_again_delivers_again_a_reconnect_rebuilds() -> None:
    head, pages = paging.split(b"v" * 20_000, LIMIT)
    asm = paging.Assembler()
    for i, page in enumerate(pages):
        asm.page("t/x", i, page)
    assert asm.head("t/x", head) is not None
    assert asm.head("t/x", head) is not None  # retained values sent again on resubscribe


def test_corrupt_pages_are_refused_and_keep_nothing() -> None:
    head, pages = paging.split(b"v" * 20_000, LIMIT)
    asm = paging.Assembler()
    asm.head("t/x", head)
    forged = paging.Page(digest=head.digest, index=0, data="dGFtcGVyZWQ=")
    asm.page("t/x", 0, forged)
    for i, page in enumerate(pages[1:-1], start=1):
        asm.page("t/x", i, page)
    with pytest.raises(ValueError, match="do not make the value"):
        asm.page("t/x", len(pages) - 1, pages[-1])
    with pytest.raises(ValueError, match="arrived on the topic of page"):
        asm.page("t/x", 3, pages[0])
    with pytest.raises(ValueError, match="not base64"):
        asm.page("t/x", 0, paging.Page(digest=head.digest, index=0, data="*"))


def test_pages_of_many_unknown_values_stay_bounded() -> None:
    asm = paging.Assembler()
    for n in range(50):
        _head, pages = paging.split(bytes([n]) * 20_000, LIMIT)
        asm.page("t/x", 0, pages[0])
    held = asm._topics["t/x"].pages
    assert len(held) == 1


def test_page_topics_and_limits() -> None:
    assert paging.value_topic("t/nodes/n1/assign/page/12") == ("t/nodes/n1/assign", 12)
    assert paging.value_topic("t/nodes/n1/assign") is None
    assert paging.page_pattern("t/nodes/+/assign") == "t/nodes/+/assign/page/+"
    with pytest.raises(ValueError, match="larger than"):
        paging.split(b"x" * (paging.MAX_ASSEMBLED + 1), paging.DEFAULT_MAX_MESSAGE)


def test_max_message_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_MAX_MESSAGE", raising=False)
    assert paging.max_message_from_env() == paging.DEFAULT_MAX_MESSAGE
    monkeypatch.setenv("SHOAL_MAX_MESSAGE", "268435455")
    assert paging.max_message_from_env() == 268435455
    monkeypatch.setenv("SHOAL_MAX_MESSAGE", "1k")
    with pytest.raises(ValueError, match="not a number"):
        paging.max_message_from_env()


# -- through the bus (in-memory broker) --------------------------------------------------


async def test_a_large_assignment_arrives_whole_and_shrinking_clears_its_pages() -> None:
    broker = MemoryBroker()
    async with (
        connected(broker, PREFIX, "scheduler", max_message=LIMIT) as writer,
        connected(broker, PREFIX, "agent", max_message=LIMIT) as reader,
    ):
        seen: list[NodeAssignment | None] = []
        await reader.subscribe(NODE_ASSIGN, lambda _, v: seen.append(v), key="n1")
        view = await reader.view(NODE_ASSIGN)
        big = assignment(2_000)
        assert len(codec.encode(codec.make("assign", big))) > 10 * LIMIT
        await writer.publish(NODE_ASSIGN, big)
        await reader.sync()
        assert seen == [big]
        assert view["n1"] == big
        assert writer.counters.paged == 1
        assert writer.counters.pages > 10
        pages = [t for t in broker.retained if "/page/" in t]
        assert len(pages) == writer.counters.pages

        await writer.publish(NODE_ASSIGN, assignment(1_000, generation=2))  # fewer pages
        await writer.publish(NODE_ASSIGN, assignment(3, generation=3))  # whole again
        await reader.sync()
        assert [len(v.replicas) for v in seen if v] == [2_000, 1_000, 3]
        assert not [t for t in broker.retained if "/page/" in t]  # nothing left behind

        # a reader that comes later gets the retained pages and head: the whole value
        await writer.publish(NODE_ASSIGN, big)
        async with connected(broker, PREFIX, "late", max_message=LIMIT) as late:
            late_view = await late.view(NODE_ASSIGN)
            await late.sync()
            assert late_view["n1"] == big
        await writer.clear(NODE_ASSIGN, "n1")
        await reader.sync()
        assert seen[-1] is None
        assert "n1" not in view
        assert not [t for t in broker.retained if t.startswith(f"{PREFIX}/nodes/n1/")]


async def test_an_oversized_publish_on_an_unpaged_channel_is_an_error() -> None:
    broker = MemoryBroker()
    async with connected(broker, PREFIX, "agent", max_message=LIMIT) as bus:
        labels = {f"label{i}": "y" * 60 for i in range(200)}
        info = NodeInfo(node="n1", address="127.0.0.1", labels=labels, capacity=Resources())
        with pytest.raises(MessageTooLarge, match="more than the 8192"):
            await bus.publish(NODE_INFO, info)
        assert bus.counters.publish_failures == 1
        assert NODE_INFO.topic(PREFIX, "n1") not in broker.retained


async def test_a_command_too_large_is_refused_before_it_is_sent() -> None:
    broker = MemoryBroker()
    async with connected(broker, PREFIX, "cli", max_message=LIMIT) as bus:
        apps = [AppSpec(name=f"a{i}", namespace="default", image="x:1") for i in range(200)]
        with pytest.raises(
            MessageTooLarge, match=r"the apply command is .* send less in one command"
        ):
            await bus.request(APPLY, ApplyCommand(apps=apps), timeout=2)


async def test_an_answer_too_large_is_answered_with_an_error() -> None:
    broker = MemoryBroker()
    async with (
        connected(broker, PREFIX, "controller", max_message=LIMIT) as server,
        connected(broker, PREFIX, "cli") as client,
    ):

        async def huge(body: ApplyCommand, _: codec.Envelope) -> Reply:
            return Reply(ok=False, errors=["m" * 100 for _ in range(200)])

        await server.answer(APPLY, huge)
        await client.sync()
        answer = await client.request(APPLY, ApplyCommand(apps=[]), timeout=5)
        assert isinstance(answer, Reply)
        assert not answer.ok
        assert "its answer is too large to send" in answer.errors[0]
