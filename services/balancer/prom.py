"""Prometheus exposition of the balancer's counters, read at scrape time.

The hot path only bumps plain integers in ``Stats``; this collector turns them into
metric families when ``/metrics`` is scraped, so serving a request costs no label lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from services.balancer.stats import CODE_CLASSES, AppStats

if TYPE_CHECKING:
    from services.balancer.policy import Policy


LABELS = ["namespace", "app"]


class LbCollector:
    """Per app (``namespace`` and ``app`` as separate labels, Prometheus style); requests
    that matched no route are counted under ``namespace=""``, ``app=""``."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "shoal_lb_requests",
            "Requests served, by app and status class",
            labels=[*LABELS, "code"],
        )
        duration = HistogramMetricFamily(
            "shoal_lb_request_duration_seconds", "Request latency at the balancer", labels=LABELS
        )
        inflight = GaugeMetricFamily("shoal_lb_inflight", "Requests in flight", labels=LABELS)
        held = GaugeMetricFamily(
            "shoal_lb_held", "Requests held for an app scaled to zero", labels=LABELS
        )
        errors = CounterMetricFamily(
            "shoal_lb_upstream_errors", "Upstream connection failures", labels=LABELS
        )
        retries = CounterMetricFamily(
            "shoal_lb_retries", "Requests retried on another replica", labels=LABELS
        )
        ejections = CounterMetricFamily(
            "shoal_lb_ejections", "Replicas ejected after a connection failure", labels=LABELS
        )
        ready = GaugeMetricFamily(
            "shoal_lb_ready_replicas", "Ready replicas in the route table", labels=LABELS
        )
        stats = self.policy.stats
        apps: list[tuple[list[str], AppStats]] = [
            ([key.namespace, key.name], s) for key, s in list(stats.apps.items())
        ]
        if stats.unrouted.total:
            apps.append((["", ""], stats.unrouted))
        for labels, s in apps:
            for cls, n in zip(CODE_CLASSES, s.by_class, strict=True):
                if n:
                    requests.add_metric([*labels, cls], n)
            duration.add_metric(labels, s.latency.cumulative(), s.latency.total)
            inflight.add_metric(labels, s.inflight)
            held.add_metric(labels, s.held)
            errors.add_metric(labels, s.upstream_errors)
            retries.add_metric(labels, s.retries)
            ejections.add_metric(labels, s.ejections)
        for app, route in self.policy.table.routes.items():
            ready.add_metric([app.namespace, app.name], len(route.backends))
        yield from (requests, duration, inflight, held, errors, retries, ejections, ready)
