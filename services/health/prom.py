"""The health monitor's Prometheus metrics: probes run (by kind and result) and their
duration, bumped as plain numbers on the probe path; and, read when scraped, the apps this
instance owns and their replicas by state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.durations import Durations
from core.metrics import histogram

if TYPE_CHECKING:
    from services.health.service import HealthService

APP = ["namespace", "app"]


class HealthCollector(Collector):
    def __init__(self, health: HealthService) -> None:
        self.health = health
        self.probes: Counter[tuple[str, str]] = Counter()  # (role, success|failure)
        self.durations: dict[tuple[str, ...], Durations] = {}  # by probe kind

    def probed(self, role: str, kind: str, success: bool, seconds: float) -> None:
        self.probes[role, "success" if success else "failure"] += 1
        durations = self.durations.get((kind,))
        if durations is None:
            durations = self.durations[kind,] = Durations()
        durations.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        h = self.health
        probes = CounterMetricFamily(
            "shoal_health_probes", "Probes run, by role and result", labels=["role", "result"]
        )
        for (role, result), n in sorted(self.probes.items()):
            probes.add_metric([role, result], n)
        yield probes
        yield histogram(
            "shoal_health_probe_duration_seconds", "Time one probe took", ["kind"], self.durations
        )
        yield GaugeMetricFamily(
            "shoal_health_apps_owned", "Apps this instance probes", value=len(h.mine)
        )
        replicas = GaugeMetricFamily(
            "shoal_app_replicas", "Replicas by readiness", labels=[*APP, "state"]
        )
        for key, app in sorted(h.mine.items()):
            states = Counter(
                "terminating" if r.terminating else "ready" if r.ready else "not_ready"
                for r in app.replicas
            )
            for state in ("ready", "not_ready", "terminating"):
                replicas.add_metric([key.namespace, key.name, state], states[state])
        yield replicas
