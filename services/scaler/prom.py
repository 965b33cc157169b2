"""The autoscaler's Prometheus metrics: scale commands the controller accepted (by app and
direction), failed ones, and, read when scraped, what it wants for each app it scales."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from services.scaler.service import ScalerService

APP = ["namespace", "app"]


class ScalerCollector(Collector):
    def __init__(self, scaler: ScalerService) -> None:
        self.scaler = scaler
        self.scaled: Counter[tuple[str, str, str]] = Counter()  # (ns, app, up|down)
        self.failed: Counter[tuple[str, str]] = Counter()

    def collect(self) -> Iterator[Metric]:
        scaled = CounterMetricFamily(
            "shoal_scaler_scales", "Scale commands accepted", labels=[*APP, "direction"]
        )
        for labels, n in sorted(self.scaled.items()):
            scaled.add_metric(list(labels), n)
        failed = CounterMetricFamily(
            "shoal_scaler_scale_failures", "Scale commands refused or lost", labels=APP
        )
        for labels2, n in sorted(self.failed.items()):
            failed.add_metric(list(labels2), n)
        wanted = GaugeMetricFamily(
            "shoal_scaler_desired_replicas", "Replicas the autoscaler wants now", labels=APP
        )
        if self.scaler.is_leader():
            for key, desired in sorted(self.scaler.wanted().items()):
                wanted.add_metric([key.namespace, key.name], desired)
        yield from (scaled, failed, wanted)
