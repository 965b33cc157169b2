"""Request statistics (pure): cumulative counters for Prometheus, and a one-second window
turned into ``RouteMetrics`` for the bus. Recording a request is a few integer updates
and one list append; percentiles are computed once per window, not per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core.durations import Durations
from core.keys import AppKey
from core.state import LbMetrics, ReplicaRouteMetrics, RouteMetrics

CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[rank]


@dataclass(slots=True)
class AppStats:
    # cumulative (Prometheus)
    total: int = 0
    by_class: list[int] = field(default_factory=lambda: [0] * len(CODE_CLASSES))
    latency: Durations = field(default_factory=Durations)
    upstream_errors: int = 0
    retries: int = 0
    ejections: int = 0
    # gauges
    inflight: int = 0
    held: int = 0
    # the current window (bus)
    w_requests: int = 0
    w_errors: int = 0
    w_latencies: list[float] = field(default_factory=list)
    w_replicas: dict[str, int] = field(default_factory=dict)
    w_replica_latencies: dict[str, list[float]] = field(default_factory=dict)
    w_replica_errors: dict[str, int] = field(default_factory=dict)

    def done(self, replica: str | None, status: int, seconds: float) -> None:
        self.total += 1
        cls = status // 100 - 1
        if 0 <= cls < 5:
            self.by_class[cls] += 1
        self.latency.observe(seconds)
        self.w_requests += 1
        if status >= 500:
            self.w_errors += 1
        self.w_latencies.append(seconds)
        if replica is not None:
            self.w_replicas[replica] = self.w_replicas.get(replica, 0) + 1
            lats = self.w_replica_latencies.get(replica)
            if lats is None:
                lats = self.w_replica_latencies[replica] = []
            lats.append(seconds)
            if status >= 500:
                self.w_replica_errors[replica] = self.w_replica_errors.get(replica, 0) + 1

    def flush(self, window: float, inflight: Mapping[str, int] | None = None) -> RouteMetrics:
        """The window as ``RouteMetrics`` (``inflight``: per replica, now); starts a new
        window."""
        lat = sorted(self.w_latencies)
        per_replica: dict[str, ReplicaRouteMetrics] = {}
        for rid, values in self.w_replica_latencies.items():
            values.sort()
            per_replica[rid] = ReplicaRouteMetrics(
                rps=len(values) / window if window > 0 else 0.0,
                inflight=(inflight or {}).get(rid, 0),
                p50_ms=percentile(values, 0.50) * 1000,
                p99_ms=percentile(values, 0.99) * 1000,
                errors=self.w_replica_errors.get(rid, 0),
            )
        out = RouteMetrics(
            rps=self.w_requests / window if window > 0 else 0.0,
            inflight=self.inflight,
            p50_ms=percentile(lat, 0.50) * 1000,
            p95_ms=percentile(lat, 0.95) * 1000,
            p99_ms=percentile(lat, 0.99) * 1000,
            errors=self.w_errors,
            requests=self.w_requests,
            held=self.held,
            replicas={r: n / window for r, n in self.w_replicas.items()} if window > 0 else {},
            per_replica=per_replica,
        )
        self.w_requests = 0
        self.w_errors = 0
        self.w_latencies = []
        self.w_replicas = {}
        self.w_replica_latencies = {}
        self.w_replica_errors = {}
        return out

    @property
    def idle(self) -> bool:
        return self.w_requests == 0 and self.inflight == 0 and self.held == 0


class Stats:
    """Per app; ``unrouted`` counts the requests that matched no route."""

    def __init__(self) -> None:
        self.apps: dict[AppKey, AppStats] = {}
        self.unrouted = AppStats()

    def app(self, key: AppKey) -> AppStats:
        s = self.apps.get(key)
        if s is None:
            s = self.apps[key] = AppStats()
        return s

    def snapshot(
        self,
        instance: str,
        window: float,
        now: float,
        inflight: Mapping[str, int] | None = None,
    ) -> LbMetrics:
        """Every app that saw traffic (or holds some) in the window, by ``ns/name``;
        ``inflight`` is per replica id, across apps (ids are unique cluster-wide)."""
        self.unrouted.flush(window)
        apps: dict[str, RouteMetrics] = {}
        for key, s in self.apps.items():
            if s.idle:
                s.flush(window)
                continue
            apps[str(key)] = s.flush(window, inflight)
        return LbMetrics(instance=instance, window=window, apps=apps, ts=now)
