"""The tests' ``Observer`` reads a paged value whole, as a subscriber does."""

from __future__ import annotations

from core.channels import NODE_REPLICAS
from core.memory import MemoryBroker
from core.state import NodeReplicas, ReplicaStatus
from tests.support.memory import connected
from tests.support.observer import Observer
from tests.support.waiting import eventually


async def test_a_paged_value_is_read_whole() -> None:
    broker = MemoryBroker()
    report = NodeReplicas(
        node="n1",
        replicas=[
            ReplicaStatus(
                id=f"default.web.{i:07d}", namespace="default", app="web", revision=1,
                node="n1", phase="running", endpoints={"http": f"127.0.0.2:{20000 + i}"},
            )
            for i in range(200)
        ],
    )  # fmt: skip
    async with (
        Observer(broker, prefix="t") as observer,
        connected(broker, "t", "agent", max_message=4096) as bus,
    ):
        await bus.publish(NODE_REPLICAS, report)
        assert bus.counters.paged == 1
        got = await eventually(lambda: observer.value(NODE_REPLICAS, "n1"))
        assert got == report
        assert observer.values(NODE_REPLICAS) == {"n1": report}
