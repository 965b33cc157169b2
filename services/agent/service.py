"""The agent's shell: its rooms wired to the bus and to one Docker engine.

Inputs: ``nodes/<node>/assign`` (-> ``Reconcile.on_assign``), ``health/+/+`` (a view read
by ``Liveness``), ``logs/request`` (-> ``Logs``), and this node's own retained
``nodes/<node>/replicas`` from before a restart (read once, at start-up). Outputs are
published by the rooms that make them: ``report.py`` (node info, replicas report),
``metrics.py``, ``logs.py``; events queued on the ``Node`` are published here.

Start-up: subscribe, wait until the retained state is delivered (a bus sync), resume
from the previous report, then run the reconcile. The long-running loops (engine watch,
resync, reconcile, report, heartbeat, metrics, events) share one TaskGroup.
"""

from __future__ import annotations

import asyncio
import time

from core import codec
from core.bus import LastWill
from core.channels import HEALTH, LOGS_REQUEST, NODE_ASSIGN, NODE_INFO, NODE_REPLICAS
from core.config import ServiceConfig
from core.runner import Reconciler
from core.service import Service
from core.state import NodeReplicas
from services.agent.actions import Actions
from services.agent.engine import Engine
from services.agent.exec_probes import ExecProbes
from services.agent.liveness import Liveness
from services.agent.logs import Logs
from services.agent.metrics import Metrics
from services.agent.node import AgentOptions, Node
from services.agent.prom import AgentCollector
from services.agent.pulls import Pulls
from services.agent.reconcile import NODE_KEY, Reconcile
from services.agent.report import Report, offline_info
from services.agent.secrets import SecretFetcher, SecretFiles, default_secrets_dir, read_mountinfo
from services.agent.watch import EngineWatch


class AgentService(Service):
    name = "agent"

    def __init__(
        self, config: ServiceConfig, options: AgentOptions, engine: Engine | None = None
    ) -> None:
        self.options = options  # the last will (built by Service.__init__) needs them
        super().__init__(config)
        self.engine = engine if engine is not None else Engine(options.docker)
        self.node = Node(options, config.prefix, look=self._look, log=self.log)
        self.report = Report(self.node, self.bus)
        self.watch = EngineWatch(self.node, self.engine, self.report.publish_info)
        self.liveness = Liveness(self.node, self.engine, self.watch)
        self.probes = ExecProbes(self.node, self.engine, self.liveness)
        self.pulls = Pulls(self.node, self.engine)
        secrets_dir = options.secrets_dir or default_secrets_dir(read_mountinfo())
        self.actions = Actions(
            self.node,
            self.engine,
            self.watch,
            self.pulls,
            (
                SecretFetcher(self.bus, options.node_id),
                SecretFiles(secrets_dir, config.prefix, options.node_id),
            ),
        )
        self.reconcile = Reconcile(self.node, self.actions, self.liveness, self.probes)
        self.reconciler: Reconciler[str] = Reconciler(
            "agent", self.reconcile.once, keys=lambda: [NODE_KEY], resync=options.resync
        )
        self.usage = Metrics(self.node, self.engine, self.bus)
        self.metrics.register(AgentCollector(self.node))
        self.logs = Logs(self.node, self.engine, self.bus)
        self.bus.on_connect(self.report.on_connect)

    def _look(self) -> None:
        self.reconciler.mark(NODE_KEY)

    def last_will(self) -> LastWill:
        """The broker announces this node offline if the agent dies without a goodbye."""
        offline = offline_info(self.options)
        return LastWill(
            NODE_INFO.topic(self.config.prefix, offline.node),
            codec.encode(codec.make(NODE_INFO.kind, offline, src=f"{self.name}/{self.instance}")),
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        node = self.node.id
        await self.bus.subscribe(NODE_ASSIGN, self.reconcile.on_assign, key=node)
        await self.bus.subscribe(LOGS_REQUEST, self.logs.on_request)
        self.liveness.health = await self.bus.view(HEALTH, on_change=self.liveness.on_health)
        await self.bus.subscribe(NODE_REPLICAS, self._on_own_report, key=node)

    async def main(self) -> None:
        self.log.info("agent starting", node=self.node.id, address=self.options.address)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.watch.run(), name="agent-engine")
                tg.create_task(self._reconcile_when_synced(), name="agent-reconcile")
                tg.create_task(self.report.heartbeat_loop(), name="agent-heartbeat")
                tg.create_task(self.report.replicas_loop(), name="agent-report")
                tg.create_task(self.watch.resync_loop(), name="agent-resync")
                tg.create_task(self.usage.run(), name="agent-stats")
                tg.create_task(self._publish_events(), name="agent-events")
        finally:
            tasks = [
                *self.actions.tasks(),
                *self.pulls.tasks(),
                *self.logs.tasks(),
                *self.probes.tasks(),
            ]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.engine.close()

    async def on_shutdown(self) -> None:
        await self.report.publish_info("offline")

    async def _reconcile_when_synced(self) -> None:
        """Reconcile only once the retained assignment (if any) has been delivered."""
        while True:
            await self.bus.wait_connected(None)
            if await self.bus.settle():
                break
        self.node.resume(time.time())
        self.reconciler.mark(NODE_KEY)
        await self.reconciler.run()

    def _on_own_report(self, _: str, report: NodeReplicas | None) -> None:
        """The retained report of this node from before a restart: restart counters and
        exec readiness verdicts of container starts still running continue from it."""
        if report is None:
            return
        if not self.node.synced:
            self.node.previous_report = report
        else:  # ours coming back, or a stale copy replayed over it (``on_own_report``)
            self.report.on_own_report(report)

    async def _publish_events(self) -> None:
        while True:
            kind, message, fields = await self.node.events.get()
            if self.bus.connected:
                await self.emit(kind, message, **fields)
