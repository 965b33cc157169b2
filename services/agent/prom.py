"""The agent's Prometheus metrics, read from the node's state when ``/metrics`` is scraped:
whether the engine answers, this node's replicas by phase, and the restarts it made per app.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.agent.node import Node
from services.agent.plan import Snapshot, node_replicas

APP = ["namespace", "app"]


class AgentCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        yield GaugeMetricFamily(
            "shoal_agent_engine_ready",
            "1 while the container engine answers",
            value=int(node.engine_ready),
        )
        phases = GaugeMetricFamily(
            "shoal_agent_replicas", "This node's replicas by phase", labels=[*APP, "phase"]
        )
        restarts = GaugeMetricFamily(
            "shoal_agent_replica_restarts",
            "Restarts counted by the replicas this node runs now (exits and liveness), by app",
            labels=APP,
        )
        if node.listed:
            report = node_replicas(
                Snapshot(
                    node=node.id,
                    address=node.options.address,
                    assignment=node.assignment,
                    containers=list(node.containers.values()),
                    records=node.records,
                ),
                time.time(),
            )
            by_phase = Counter((r.namespace, r.app, r.phase) for r in report.replicas)
            for (namespace, app, phase), n in sorted(by_phase.items()):
                phases.add_metric([namespace, app, phase], n)
            by_app: Counter[tuple[str, str]] = Counter()
            for r in report.replicas:
                by_app[r.namespace, r.app] += r.restarts
            for (namespace, app), n in sorted(by_app.items()):
                restarts.add_metric([namespace, app], n)
        yield from (phases, restarts)
