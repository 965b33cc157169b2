"""What the agent tells the bus about its node: node info and the replicas report.

- ``nodes/<node>/info`` (retained NodeInfo): at connect, every ``--heartbeat``, whenever
  the engine comes or goes (``not_ready`` with the reason), ``offline`` on a clean stop;
  the last will (``offline_info``) says ``offline`` when the agent dies without a goodbye.
- ``nodes/<node>/replicas`` (retained NodeReplicas, built by ``plan.node_replicas``): one
  message per burst of changes (20 ms coalescing), an unchanged state is not sent again;
  sent again after every reconnect.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from core.bus import Bus
from core.channels import NODE_INFO, NODE_REPLICAS
from core.errors import BusError
from core.spec import Resources
from core.state import NodeInfo, NodeReplicas, NodeStatus
from services.agent.node import AgentOptions, Node, host_capacity
from services.agent.plan import Snapshot, node_replicas

COALESCE = 0.02  # seconds: a burst of changes becomes one report


def offline_info(options: AgentOptions) -> NodeInfo:
    """The node info the broker publishes as the agent's last will."""
    cpus, memory = host_capacity()
    return NodeInfo(
        node=options.node_id,
        address=options.address,
        labels=options.labels,
        capacity=Resources(cpu=options.cpus or cpus, memory=options.memory or memory or 2**30),
        status="offline",
        reason="agent connection lost",
        heartbeat_interval=options.heartbeat,
    )


class Report:
    def __init__(self, node: Node, bus: Bus) -> None:
        self.node = node
        self.bus = bus
        self._last: dict[str, Any] | None = None  # the last report sent, without its ts

    def info(self, status: NodeStatus | None = None) -> NodeInfo:
        node = self.node
        if status is None:
            status = "ready" if node.engine_ready else "not_ready"
        return NodeInfo(
            node=node.id,
            address=node.options.address,
            labels=node.options.labels,
            capacity=node.capacity,
            status=status,
            reason="" if status == "ready" else node.engine_reason,
            version=node.engine_version,
            heartbeat=time.time(),
            heartbeat_interval=node.options.heartbeat,
        )

    async def publish_info(self, status: NodeStatus | None = None) -> None:
        try:
            await self.bus.publish(NODE_INFO, self.info(status), timeout=2)
        except BusError as err:
            self.node.log.debug("node info not published", error=str(err))

    async def on_connect(self) -> None:
        """A (re)connect: node info now, and the replicas report again."""
        await self.publish_info()
        self._last = None
        self.node.report_due.set()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.node.options.heartbeat)
            if self.bus.connected:
                await self.publish_info()

    def on_own_report(self, report: NodeReplicas) -> None:
        """Our retained report came back from the broker. One that is not the last one we
        sent (a bridge between region brokers replaying the stale copy a region kept while
        cut off, or any other writer) is replaced by ours at once: the agent is this topic's
        only writer and, unlike ``info``, it is not republished on a timer. Our own earlier
        reports coming back late cost one more publish of the current one."""
        if self._last is None:
            return
        if report.model_dump(mode="json", exclude={"ts"}) != self._last:
            self.node.log.info("report overwritten by someone else; publishing ours again")
            self._last = None
            self.node.report_due.set()

    async def replicas_loop(self) -> None:
        node, due = self.node, self.node.report_due
        while True:
            await due.wait()
            await asyncio.sleep(COALESCE)
            due.clear()
            if not node.listed or not node.synced:
                continue
            snapshot = Snapshot(
                node=node.id,
                address=node.options.address,
                assignment=node.assignment,
                containers=list(node.containers.values()),
                records=node.records,
            )
            try:
                report = node_replicas(snapshot, time.time())
            except Exception:
                node.log.exception("building the report failed")
                continue
            body = report.model_dump(mode="json", exclude={"ts"})
            if body == self._last:
                continue
            try:
                await self.bus.publish(NODE_REPLICAS, report)
                self._last = body
            except BusError as err:
                node.log.debug("report not published; will retry", error=str(err))
                await asyncio.sleep(0.5)
                due.set()
