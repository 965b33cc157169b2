"""TCP route statistics (pure counters), their Prometheus families and their bus window.

Like ``stats.py`` for HTTP: the relay bumps plain integers; ``TcpCollector`` turns them
into metric families at scrape time, and ``TcpStats.snapshot`` the one-second window into
``LbMetrics.tcp``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core.keys import AppKey
from core.state import TcpRouteMetrics

LABELS = ["namespace", "app"]


@dataclass(slots=True)
class TcpAppStats:
    # cumulative (Prometheus)
    connections: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    retries: int = 0
    # gauges
    active: int = 0
    per_replica: dict[str, int] = field(default_factory=dict)
    # the current window (bus)
    w_connections: int = 0
    w_bytes_in: int = 0
    w_bytes_out: int = 0
    w_errors: int = 0

    def opened(self, replica: str) -> None:
        self.connections += 1
        self.w_connections += 1
        self.active += 1
        self.per_replica[replica] = self.per_replica.get(replica, 0) + 1

    def closed(self, replica: str) -> None:
        self.active -= 1
        left = self.per_replica.get(replica, 0) - 1
        if left > 0:
            self.per_replica[replica] = left
        else:
            self.per_replica.pop(replica, None)

    def failed(self) -> None:
        """A connection accepted and closed unserved."""
        self.connections += 1
        self.w_connections += 1
        self.errors += 1
        self.w_errors += 1

    def sent(self, n: int) -> None:
        self.bytes_in += n
        self.w_bytes_in += n

    def received(self, n: int) -> None:
        self.bytes_out += n
        self.w_bytes_out += n

    @property
    def idle(self) -> bool:
        return self.w_connections == 0 and self.active == 0 and self.w_bytes_in == 0

    def flush(self) -> TcpRouteMetrics:
        out = TcpRouteMetrics(
            connections=self.w_connections,
            active=self.active,
            bytes_in=self.w_bytes_in,
            bytes_out=self.w_bytes_out,
            errors=self.w_errors,
            per_replica=dict(self.per_replica),
        )
        self.w_connections = self.w_bytes_in = self.w_bytes_out = self.w_errors = 0
        return out


class TcpStats:
    def __init__(self) -> None:
        self.apps: dict[AppKey, TcpAppStats] = {}

    def app(self, key: AppKey) -> TcpAppStats:
        s = self.apps.get(key)
        if s is None:
            s = self.apps[key] = TcpAppStats()
        return s

    def snapshot(self) -> dict[str, TcpRouteMetrics]:
        """The window of every app with TCP traffic in it (or connections open), by
        ``ns/name``; starts a new window."""
        out: dict[str, TcpRouteMetrics] = {}
        for key, s in self.apps.items():
            idle = s.idle
            window = s.flush()
            if not idle:
                out[str(key)] = window
        return out


class TcpCollector:
    """``shoal_lb_tcp_*`` per app (``namespace``, ``app``)."""

    def __init__(self, stats: TcpStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        connections = CounterMetricFamily(
            "shoal_lb_tcp_connections", "TCP connections accepted on a TCP route", labels=LABELS
        )
        active = GaugeMetricFamily(
            "shoal_lb_tcp_active_connections", "TCP connections open now", labels=LABELS
        )
        traffic = CounterMetricFamily(
            "shoal_lb_tcp_bytes",
            "Bytes relayed on TCP routes: in = client to replica, out = replica to client",
            labels=[*LABELS, "direction"],
        )
        errors = CounterMetricFamily(
            "shoal_lb_tcp_errors",
            "TCP connections closed unserved (no ready replica, or none reachable)",
            labels=LABELS,
        )
        retries = CounterMetricFamily(
            "shoal_lb_tcp_retries", "TCP connects retried on another replica", labels=LABELS
        )
        for key, s in list(self.stats.apps.items()):
            labels = [key.namespace, key.name]
            connections.add_metric(labels, s.connections)
            active.add_metric(labels, s.active)
            traffic.add_metric([*labels, "in"], s.bytes_in)
            traffic.add_metric([*labels, "out"], s.bytes_out)
            errors.add_metric(labels, s.errors)
            retries.add_metric(labels, s.retries)
        yield from (connections, active, traffic, errors, retries)
