"""``cmd/rebalance`` on the scheduler shell (in-memory broker): a dry run plans, a real
one surges onto the joined node and removes the old replicas once the new ones are ready."""

from __future__ import annotations

from core.channels import APPS, HEALTH, NODE_ASSIGN, NODE_INFO, REBALANCE
from core.commands import RebalanceCommand, RebalancePlan
from core.keys import AppKey
from core.memory import MemoryBroker
from core.state import AppHealth, ReplicaHealth
from tests.support.waiting import eventually
from tests.unit.scheduler.helpers import app_state, node_info
from tests.unit.scheduler.test_service import client, placed, scheduler

WEB = AppKey("default", "web")


async def test_rebalance_dry_run_then_moves_readiness_gated() -> None:
    broker = MemoryBroker()
    async with client(broker) as bus, scheduler(broker, "s1") as service:
        assignments = await bus.view(NODE_ASSIGN)
        await bus.publish(NODE_INFO, node_info("n1"))
        await bus.publish(APPS, app_state("web", 4))
        first = await eventually(lambda: len(placed(assignments)) == 4 and placed(assignments))

        async def ready(ids: set[str]) -> None:
            where = {r: n for n in ("n1", "n2") for r in placed(assignments, n)}
            health = AppHealth(
                namespace="default",
                name="web",
                replicas=[
                    ReplicaHealth(id=i, revision=1, node=where[i], endpoint="x:1", ready=True)
                    for i in sorted(ids)
                ],
            )
            await bus.publish(HEALTH, health)

        await ready(first)
        await bus.publish(NODE_INFO, node_info("n2"))
        await eventually(lambda: service.cluster is not None and "n2" in service.cluster.nodes)

        dry = await bus.request(REBALANCE, RebalanceCommand(dry_run=True), timeout=5)
        assert isinstance(dry, RebalancePlan)
        assert [(m.source, m.target) for m in dry.moves] == [("n1", "n2")] * 2
        assert placed(assignments, "n2") == set()  # nothing moved

        plan = await bus.request(REBALANCE, RebalanceCommand(), timeout=5)
        assert isinstance(plan, RebalancePlan)
        assert len(plan.moves) == 2
        new = await eventually(
            lambda: len(placed(assignments, "n2")) == 2 and placed(assignments, "n2")
        )
        assert placed(assignments, "n1") == first  # the old ones stay until the new are ready
        await ready(first | new)
        moved = {m.replica for m in plan.moves}
        await eventually(lambda: placed(assignments, "n1") == first - moved)

        again = await bus.request(REBALANCE, RebalanceCommand(dry_run=True), timeout=5)
        assert isinstance(again, RebalancePlan)
        assert again.moves == []
        assert again.message == "the nodes are balanced"
