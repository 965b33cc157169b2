"""What the dashboard's pages show, built from the retained state it keeps.

Pure functions over models (no bus, no HTTP): the service keeps one ``Cluster`` of views and
pushes ``overview(cluster, series)`` to every open page; each page picks what it draws from
it (an app's replicas by node, a node's replicas), so one push serves every page.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.cluster_state import ClusterState, app_phase, ready_replicas, requested
from core.keys import ServiceKey
from core.state import (
    AppHealth,
    AppState,
    LbMetrics,
    NodeMetrics,
    Presence,
    ReplicaHealth,
    RouteMetrics,
    ScalerStatus,
    SchedulerStatus,
)

#: Points kept per app: one a second, the last five minutes.
SERIES_POINTS = 300
#: A balancer instance's figures older than this (seconds) no longer count.
METRICS_STALE = 5.0


@dataclass
class Cluster(ClusterState):
    """The retained state the dashboard reads (each a live ``View``'s mapping): the state
    the CLI reads too, and the services' presence and the nodes' latest usage."""

    presence: Mapping[ServiceKey, Presence] = field(default_factory=dict)
    usage: Mapping[str, NodeMetrics] = field(default_factory=dict)


# -- apps -------------------------------------------------------------------------------


def app_reason(app: AppState, placement: SchedulerStatus | None, ready: int) -> str:
    """Why an app is not where it should be; empty when it is."""
    parts = [app.message] if app.message and app.phase != "stable" else []
    if placement is not None and placement.unplaceable:
        parts.append(placement.message or f"{placement.unplaceable} replica(s) cannot be placed")
    if not parts and ready < app.replicas:
        parts.append(f"{ready} of {app.replicas} replicas ready")
    return "; ".join(parts)


def app_row(
    app: AppState,
    health: AppHealth | None,
    placement: SchedulerStatus | None,
    scaler: ScalerStatus | None,
) -> dict[str, Any]:
    ready = ready_replicas(app, health)
    spec = app.spec
    route = spec.route
    return {
        "key": str(app.key),
        "namespace": app.namespace,
        "name": app.name,
        "revision": app.revision,
        "ready": ready,
        "desired": app.replicas,
        "phase": app_phase(app, placement),
        "reason": app_reason(app, placement, ready),
        "image": spec.image,
        "route": None if route is None else f"{route.host or '*'}{route.path}",
        "autoscale": None
        if spec.autoscale is None
        else {
            "min": spec.autoscale.min,
            "max": spec.autoscale.max,
            "reason": scaler.reason if scaler else "",
        },
        "versions": [
            {"revision": v.revision, "replicas": v.replicas, "weight": v.weight}
            for v in app.versions
        ],
        "updated": app.updated,
    }


# -- replicas ---------------------------------------------------------------------------


def replica_rows(cluster: Cluster) -> list[dict[str, Any]]:
    """Every replica the agents report, joined with its health verdict."""
    verdicts = cluster.replica_health()
    rows = []
    for node, observed in sorted(cluster.observed.items()):
        info = cluster.nodes.get(node)
        for r in observed.replicas:
            verdict = verdicts.get(r.id)
            rows.append(
                {
                    "id": r.id,
                    "namespace": r.namespace,
                    "app": r.app,
                    "key": f"{r.namespace}/{r.app}",
                    "node": r.node,
                    "node_status": info.status if info else "unknown",
                    "revision": r.revision,
                    "phase": r.phase,
                    "reason": r.reason,
                    "restarts": r.restarts,
                    "ready": bool(verdict and verdict.ready and not verdict.terminating),
                    "live": verdict.live if verdict else True,
                    "health": health_text(verdict),
                    "endpoints": dict(r.endpoints),
                    "started_at": r.started_at,
                }
            )
    return sorted(rows, key=lambda row: (row["key"], row["node"], row["id"]))


def health_text(verdict: ReplicaHealth | None) -> str:
    if verdict is None:
        return "no verdict yet"
    if verdict.terminating:
        return "terminating"
    if not verdict.live:
        return "liveness failed" + (f": {verdict.reason}" if verdict.reason else "")
    if verdict.ready:
        return "ready"
    return "not ready" + (f": {verdict.reason}" if verdict.reason else "")


# -- nodes ------------------------------------------------------------------------------


def node_rows(cluster: Cluster) -> list[dict[str, Any]]:
    """Every node: capacity, what its assignment requests, and what its replicas use."""
    rows = []
    for node, info in sorted(cluster.nodes.items()):
        req_cpu, req_mem = requested(cluster.assigns.get(node))
        usage = cluster.usage.get(node)
        cordon = cluster.cordons.get(node)
        observed = cluster.observed.get(node)
        rows.append(
            {
                "node": node,
                "address": info.address,
                "status": info.status,
                "reason": info.reason,
                "labels": dict(info.labels),
                "version": info.version,
                "heartbeat": info.heartbeat,
                "capacity": {"cpu": info.capacity.cpu, "memory": info.capacity.memory},
                "requested": {"cpu": req_cpu, "memory": req_mem},
                "used": None
                if usage is None
                else {
                    "cpu": round(sum(u.cpu for u in usage.replicas.values()), 3),
                    "memory": sum(u.memory for u in usage.replicas.values()),
                },
                "replicas": len(observed.replicas) if observed else 0,
                "schedulable": cordon is None,
                "cordon": None
                if cordon is None
                else {"drain": cordon.drain, "reason": cordon.reason, "since": cordon.since},
            }
        )
    return rows


def service_rows(cluster: Cluster) -> list[dict[str, Any]]:
    return [
        {
            "service": p.service,
            "instance": p.instance,
            "status": p.status,
            "version": p.version,
            "host": p.host,
            "leader": p.leader,
            "metrics": p.metrics,
        }
        for _, p in sorted(cluster.presence.items())
    ]


# -- request figures over time -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    ts: float
    rps: float
    errors: float  # 5xx per second
    p50_ms: float
    p99_ms: float


def combine(figures: list[RouteMetrics], window: float) -> Point:
    """One app's figures across balancer instances: rates add up, latency is the worst."""
    window = window if window > 0 else 1.0
    return Point(
        ts=0.0,
        rps=round(sum(f.rps for f in figures), 3),
        errors=round(sum(f.errors for f in figures) / window, 3),
        p50_ms=round(max((f.p50_ms for f in figures), default=0.0), 3),
        p99_ms=round(max((f.p99_ms for f in figures), default=0.0), 3),
    )


class Series:
    """Per app, one point a second from the latest ``LbMetrics`` of every balancer."""

    def __init__(self, points: int = SERIES_POINTS) -> None:
        self.points = points
        self.latest: dict[str, LbMetrics] = {}
        self.by_app: dict[str, deque[Point]] = {}

    def record(self, metrics: LbMetrics) -> None:
        self.latest[metrics.instance] = metrics

    def sample(self, now: float, apps: set[str]) -> None:
        """Append one point per known app (zero when no balancer reports it); apps that are
        gone lose their series."""
        fresh = [m for m in self.latest.values() if now - m.ts <= METRICS_STALE]
        for instance in [i for i, m in self.latest.items() if now - m.ts > METRICS_STALE]:
            del self.latest[instance]
        for key in list(self.by_app):
            if key not in apps:
                del self.by_app[key]
        for key in apps:
            figures = [m.apps[key] for m in fresh if key in m.apps]
            window = max((m.window for m in fresh if key in m.apps), default=1.0)
            point = combine(figures, window)
            series = self.by_app.setdefault(key, deque(maxlen=self.points))
            series.append(Point(round(now, 3), point.rps, point.errors, point.p50_ms, point.p99_ms))

    def as_json(self) -> dict[str, list[list[float]]]:
        """``ns/name -> [[ts, rps, errors/s, p50 ms, p99 ms], ...]`` (compact for the page)."""
        return {
            key: [[p.ts, p.rps, p.errors, p.p50_ms, p.p99_ms] for p in points]
            for key, points in self.by_app.items()
        }


# -- the push ---------------------------------------------------------------------------


def overview(cluster: Cluster) -> dict[str, Any]:
    """Everything every page needs, but the request figures (pushed on their own)."""
    apps = [
        app_row(
            app,
            cluster.health.get(key),
            cluster.placement.get(key),
            cluster.scaling.get(key),
        )
        for key, app in sorted(cluster.apps.items())
    ]
    return {
        "apps": apps,
        "nodes": node_rows(cluster),
        "replicas": replica_rows(cluster),
        "services": service_rows(cluster),
    }
