"""The metrics book: recent balancer and agent samples folded into one ``Observation`` per app.

Pure bookkeeping, no I/O: the service feeds it what arrives on ``metrics/lb/+`` and
``metrics/nodes/+`` with the time of arrival (the scaler's own clock, so clock skew between
machines does not matter) and asks for an app's observation at evaluation time.

- Balancer samples (``LbMetrics``, one per instance per second) are kept for ``window``
  seconds. Per app, the request rate and in-flight count are the *higher* of the window
  mean and the latest samples (each summed over instances: several balancers share the
  traffic), so a step up in load counts at once while a dip has to last (fast up, slow
  down); an app missing from a sample counts as idle in it. p95 latency is the
  request-weighted mean of the samples' p95; held requests are the sum of each instance's
  latest count.
- Agent samples (``NodeMetrics``) are kept per node, the latest only, while younger than
  ``node_ttl``; cpu and memory in use are summed over the app's replicas on every node.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from core.keys import AppKey
from core.state import LbMetrics, NodeMetrics, ReplicaUsage
from services.scaler.decide import Observation

__all__ = ["MetricsBook"]


def _app_of_replica(replica_id: str, usage: ReplicaUsage) -> AppKey | None:
    if usage.namespace and usage.app:
        return AppKey(usage.namespace, usage.app)
    parts = replica_id.split(".")
    if len(parts) >= 3:
        return AppKey(parts[0], parts[1])
    return None


@dataclass
class MetricsBook:
    window: float = 3.0
    node_ttl: float = 15.0
    _lb: dict[str, deque[tuple[float, LbMetrics]]] = field(default_factory=dict)
    _nodes: dict[str, tuple[float, NodeMetrics]] = field(default_factory=dict)

    def add_lb(self, sample: LbMetrics, now: float) -> None:
        samples = self._lb.setdefault(sample.instance, deque())
        samples.append((now, sample))
        self._prune_instance(sample.instance, now)

    def add_node(self, sample: NodeMetrics, now: float) -> None:
        self._nodes[sample.node] = (now, sample)

    def prune(self, now: float) -> None:
        for instance in list(self._lb):
            self._prune_instance(instance, now)
        for node, (ts, _) in list(self._nodes.items()):
            if now - ts > self.node_ttl:
                del self._nodes[node]

    def _prune_instance(self, instance: str, now: float) -> None:
        samples = self._lb[instance]
        while samples and now - samples[0][0] > self.window:
            samples.popleft()
        if not samples:
            del self._lb[instance]

    @property
    def balancers(self) -> list[str]:
        return sorted(self._lb)

    def observe(self, key: AppKey, now: float) -> Observation:
        """The observation of one app at ``now``."""
        self.prune(now)
        name = str(key)  # how balancer samples name apps
        rps = inflight = last_rps = last_inflight = 0.0
        requests = held = 0
        weighted_p95 = weight = 0.0
        for samples in self._lb.values():
            n = len(samples)
            latest = samples[-1][1].apps.get(name)
            if latest is not None:
                held += latest.held
                last_rps += latest.rps
                last_inflight += latest.inflight
            for _, sample in samples:
                route = sample.apps.get(name)
                if route is None:
                    continue
                rps += route.rps / n
                inflight += route.inflight / n
                requests += route.requests
                if route.requests > 0:
                    weighted_p95 += route.p95_ms * route.requests
                    weight += route.requests
        lb_fresh = bool(self._lb)

        cpu = 0.0
        memory = 0.0
        replicas = 0
        for _, node_sample in self._nodes.values():
            for replica_id, usage in node_sample.replicas.items():
                if _app_of_replica(replica_id, usage) == key:
                    cpu += usage.cpu
                    memory += usage.memory
                    replicas += 1
        return Observation(
            rps=max(rps, last_rps) if lb_fresh else None,
            inflight=max(inflight, last_inflight) if lb_fresh else None,
            p95_ms=weighted_p95 / weight if weight else None,
            requests=requests,
            held=held,
            cpu=cpu if replicas else None,
            memory=memory if replicas else None,
            usage_replicas=replicas,
            lb_fresh=lb_fresh,
        )
