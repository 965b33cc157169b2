"""Node metrics: CPU and memory of every running replica, every ``--stats-interval``.

One-shot Docker stats of each running container (10 at a time), turned into usage by
``stats.py`` (CPU from the difference with the previous sample), published on
``metrics/nodes/<node>`` (QoS 0: a lost sample is replaced by the next one).
"""

from __future__ import annotations

import asyncio
import time

from core.bus import Bus
from core.channels import NODE_METRICS
from core.errors import BusError, RuntimeFailure
from core.state import NodeMetrics, ReplicaUsage
from services.agent.containers import Container
from services.agent.engine import Engine
from services.agent.node import Node
from services.agent.stats import Sample, cpu_cores, parse_sample


class Metrics:
    def __init__(self, node: Node, engine: Engine, bus: Bus) -> None:
        self.node = node
        self.engine = engine
        self.bus = bus
        self._previous: dict[str, Sample] = {}  # container id -> its last sample
        self._sem = asyncio.Semaphore(10)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.node.options.stats_interval)
            if not self.node.engine_ready:
                continue
            try:
                await self.publish()
            except RuntimeFailure as err:
                self.node.log.debug("stats failed", error=str(err))
            except Exception:
                self.node.log.exception("stats round failed")

    async def _sample(self, c: Container) -> tuple[Container, Sample | None]:
        async with self._sem:
            data = await self.engine.stats(c.id)
        return c, parse_sample(data) if data else None

    async def publish(self) -> None:
        running = [c for c in self.node.containers.values() if c.running]
        results = await asyncio.gather(*(self._sample(c) for c in running))
        usage: dict[str, ReplicaUsage] = {}
        previous, self._previous = self._previous, {}
        for c, s in results:
            if s is None:
                continue
            self._previous[c.id] = s
            usage[c.replica] = ReplicaUsage(
                cpu=cpu_cores(previous.get(c.id), s),
                memory=s.memory,
                memory_limit=s.memory_limit,
                namespace=c.namespace,
                app=c.app,
            )
        metrics = NodeMetrics(node=self.node.id, replicas=usage, ts=time.time())
        try:
            await self.bus.publish(NODE_METRICS, metrics, timeout=2)
        except BusError as err:
            self.node.log.debug("metrics not published", error=str(err))
