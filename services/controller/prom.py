"""The controller's Prometheus metrics, read from its state when ``/metrics`` is scraped:
per app its phase, desired replicas and revision (only while leading: a standby's copy
would count every app twice), and how long store commits take."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.durations import Durations
from core.metrics import histogram

if TYPE_CHECKING:
    from services.controller.service import ControllerService

APP = ["namespace", "app"]


class ControllerCollector(Collector):
    def __init__(self, controller: ControllerService) -> None:
        self.controller = controller
        self.commits = Durations()  # one store transaction each

    def collect(self) -> Iterator[Metric]:
        c = self.controller
        yield GaugeMetricFamily(
            "shoal_controller_serving",
            "1 while this controller leads and has its store open",
            value=int(c.serving),
        )
        phase = GaugeMetricFamily(
            "shoal_app_phase", "1 for the phase each app is in", labels=[*APP, "phase"]
        )
        desired = GaugeMetricFamily("shoal_app_desired_replicas", "Desired replicas", labels=APP)
        revision = GaugeMetricFamily("shoal_app_revision", "Current revision", labels=APP)
        rolling = GaugeMetricFamily(
            "shoal_app_rollout_in_progress", "1 during a rollout", labels=APP
        )
        if c.serving:
            for key, record in sorted(c.apps.items()):
                labels = [key.namespace, key.name]
                phase.add_metric([*labels, record.state.phase], 1)
                desired.add_metric(labels, record.state.spec.replicas)
                revision.add_metric(labels, record.state.revision)
                rolling.add_metric(labels, int(record.rollout is not None))
        yield from (phase, desired, revision, rolling)
        yield GaugeMetricFamily(
            "shoal_controller_broken_apps",
            "Stored apps that do not read back (served by no one until fixed)",
            value=len(c.broken) if c.serving else 0,
        )
        yield histogram(
            "shoal_controller_store_commit_duration_seconds",
            "Time one store transaction took (durable commit included)",
            [],
            {(): self.commits},
        )
