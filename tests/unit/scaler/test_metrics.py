"""The metrics book: balancer and agent samples folded into one observation per app."""

from __future__ import annotations

import pytest

from core.keys import AppKey
from core.state import LbMetrics, NodeMetrics, ReplicaUsage, RouteMetrics
from services.scaler.metrics import MetricsBook

KEY = AppKey("default", "web")


def sample(instance: str, **apps: RouteMetrics) -> LbMetrics:
    return LbMetrics(instance=instance, apps={k.replace("__", "/"): v for k, v in apps.items()})


def test_instances_are_summed_and_a_step_up_counts_at_once() -> None:
    book = MetricsBook(window=3.0)
    book.add_lb(sample("a", default__web=RouteMetrics(rps=100, inflight=4, requests=100)), 10.0)
    book.add_lb(sample("a", default__web=RouteMetrics(rps=300, inflight=8, requests=300)), 11.0)
    book.add_lb(sample("b", default__web=RouteMetrics(rps=50, inflight=1, requests=50)), 11.0)
    obs = book.observe(KEY, 11.5)
    # latest samples (300 + 50) beat the window mean (200 + 50)
    assert obs.rps == pytest.approx(300 + 50)
    assert obs.inflight == pytest.approx(8 + 1)
    assert obs.requests == 450
    assert obs.lb_fresh
    assert obs.active


def test_a_dip_has_to_last_the_window() -> None:
    book = MetricsBook(window=3.0)
    for t, rps in ((10.0, 300.0), (11.0, 300.0), (12.0, 0.0)):
        book.add_lb(sample("a", default__web=RouteMetrics(rps=rps, requests=int(rps))), t)
    assert book.observe(KEY, 12.0).rps == pytest.approx(200)  # the window mean


def test_an_app_missing_from_a_sample_counts_as_idle_in_it() -> None:
    book = MetricsBook(window=3.0)
    book.add_lb(sample("a", default__web=RouteMetrics(rps=100, requests=100)), 10.0)
    book.add_lb(sample("a"), 11.0)
    assert book.observe(KEY, 11.0).rps == pytest.approx(50)


def test_old_samples_and_instances_leave_the_window() -> None:
    book = MetricsBook(window=3.0)
    book.add_lb(sample("a", default__web=RouteMetrics(rps=100, requests=100)), 10.0)
    book.add_lb(sample("b"), 12.0)
    obs = book.observe(KEY, 14.0)
    assert (obs.rps, obs.lb_fresh, obs.active) == (0.0, True, False)
    assert book.balancers == ["b"]
    obs = book.observe(KEY, 20.0)
    assert (obs.rps, obs.inflight, obs.lb_fresh) == (None, None, False)


def test_p95_is_request_weighted_and_absent_without_requests() -> None:
    book = MetricsBook(window=3.0)
    book.add_lb(sample("a", default__web=RouteMetrics(rps=1, requests=1, p95_ms=100)), 10.0)
    book.add_lb(sample("b", default__web=RouteMetrics(rps=3, requests=3, p95_ms=20)), 10.0)
    assert book.observe(KEY, 10.0).p95_ms == pytest.approx(40)
    idle = MetricsBook()
    idle.add_lb(sample("a", default__web=RouteMetrics(p95_ms=100)), 10.0)
    assert idle.observe(KEY, 10.0).p95_ms is None


def test_held_requests_are_the_latest_count_of_each_instance() -> None:
    book = MetricsBook(window=3.0)
    book.add_lb(sample("a", default__web=RouteMetrics(held=5)), 10.0)
    book.add_lb(sample("a", default__web=RouteMetrics(held=2)), 11.0)
    book.add_lb(sample("b", default__web=RouteMetrics(held=1)), 11.0)
    obs = book.observe(KEY, 11.0)
    assert obs.held == 3
    assert obs.active


def test_node_usage_is_summed_per_app_and_expires() -> None:
    book = MetricsBook(node_ttl=10.0)
    mib = 1024**2
    book.add_node(
        NodeMetrics(
            node="n1",
            replicas={
                "default.web.aaaa0001": ReplicaUsage(cpu=0.2, memory=50 * mib),
                "x.y.bbbb": ReplicaUsage(cpu=0.9, memory=mib, namespace="default", app="web"),
                "default.api.cccc0001": ReplicaUsage(cpu=5, memory=mib),
            },
        ),
        10.0,
    )
    book.add_node(
        NodeMetrics(node="n2", replicas={"default.web.dddd": ReplicaUsage(cpu=0.1, memory=mib)}),
        12.0,
    )
    obs = book.observe(KEY, 12.0)
    assert obs.cpu == pytest.approx(1.2)
    assert obs.memory == 52 * mib
    assert obs.usage_replicas == 3
    assert obs.rps is None
    obs = book.observe(KEY, 21.0)
    assert (obs.cpu, obs.usage_replicas) == (pytest.approx(0.1), 1)
