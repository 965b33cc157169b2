"""The scheduler's Prometheus metrics, read when ``/metrics`` is scraped: nodes by status,
and per app the replicas placed and those that fit nowhere (only while leading, so that a
standby does not count them twice)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from services.scheduler.service import SchedulerService

APP = ["namespace", "app"]


class SchedulerCollector(Collector):
    def __init__(self, scheduler: SchedulerService) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        s = self.scheduler
        nodes = GaugeMetricFamily("shoal_nodes", "Nodes by status", labels=["status"])
        placed = GaugeMetricFamily("shoal_app_placed_replicas", "Replicas placed", labels=APP)
        unplaceable = GaugeMetricFamily(
            "shoal_app_unplaceable_replicas", "Replicas that fit on no node", labels=APP
        )
        if s.is_leader():
            for status, n in sorted(Counter(i.status for i in s.infos.values()).items()):
                nodes.add_metric([status], n)
            for key, st in sorted(s.statuses.items()):
                placed.add_metric([key.namespace, key.name], st.placed)
                unplaceable.add_metric([key.namespace, key.name], st.unplaceable)
        lag = GaugeMetricFamily(
            "shoal_scheduler_read_lag_seconds",
            "How far behind the bus the scheduler reads, from heartbeat timestamps "
            "(added to the node graces)",
        )
        lag.add_metric([], s.read_lag.current())
        yield from (nodes, placed, unplaceable, lag)
