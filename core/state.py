"""Models of what travels on state topics: apps, nodes, assignments, replicas, health.

Each model is the *whole* value of one retained topic (level-triggered: a reader that
missed a hundred updates needs only the last one).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from core.bounds import MAX_COUNT, Count, Int64, Serial
from core.keys import AppKey
from core.spec import AppSpec, Model, Resources
from core.wire_memo import dumped

NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


def check_node_id(value: str) -> str:
    if not NODE_ID.match(value):
        raise ValueError(
            f"node id {value!r} must be 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


# -- apps (writer: controller) ---------------------------------------------------------


class AppVersion(Model):
    """One revision of an app that should have ``replicas`` running right now.

    Normally an app has one version; during a rollout or a canary it has two.
    """

    revision: Serial
    spec: AppSpec
    replicas: Count
    weight: int | None = Field(default=None, ge=0, le=100)

    def wire_dump(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, the spec's dump shared (``core.wire_memo``)."""
        data = self.model_dump(mode="json", exclude={"spec"})
        data["spec"] = dumped(self.spec)
        return data


AppPhase = Literal["stable", "progressing", "rolling_back", "rolled_back", "paused", "failed"]


class AppState(Model):
    """Retained on ``apps/<ns>/<name>``: the desired state of one app."""

    namespace: str
    name: str
    revision: Serial = Field(description="the revision the app converges to")
    generation: Serial = Field(description="bumped on every change to this record")
    spec: AppSpec
    replicas: int = Field(
        ge=0, le=MAX_COUNT, description="desired replica count (manual or autoscaled)"
    )
    versions: list[AppVersion]
    phase: AppPhase = "stable"
    message: str = ""
    updated: float = 0.0
    store_id: str = Field("", description="the id of the controller store that wrote it")
    store_seq: Count = Field(0, description="that store's write sequence number when it wrote it")

    @property
    def key(self) -> AppKey:
        return AppKey(self.namespace, self.name)

    def wire_dump(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, the specs' dumps shared (``core.wire_memo``): a
        rollout step sends the same specs as the step before."""
        data = self.model_dump(mode="json", exclude={"spec", "versions"})
        data["spec"] = dumped(self.spec)
        data["versions"] = [v.wire_dump() for v in self.versions]
        return data


# -- nodes (writer: each agent for itself) ---------------------------------------------

NodeStatus = Literal["ready", "not_ready", "offline"]


class NodeInfo(Model):
    """Retained on ``nodes/<node>/info``; the agent's last will sets ``status=offline``."""

    node: str
    address: str
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: Resources
    status: NodeStatus = "ready"
    reason: str = ""
    version: str = ""
    heartbeat: float = 0.0
    heartbeat_interval: float = 2.0

    _check_node = field_validator("node")(classmethod(lambda cls, v: check_node_id(v)))


# -- assignments (writer: scheduler) ---------------------------------------------------


class AssignedReplica(Model):
    id: str
    namespace: str
    app: str
    revision: Count

    @property
    def spec_key(self) -> str:
        return spec_key(self.namespace, self.app, self.revision)


def spec_key(namespace: str, app: str, revision: int) -> str:
    return f"{namespace}/{app}@{revision}"


class NodeAssignment(Model):
    """Retained on ``nodes/<node>/assign``: every replica the node must run.

    Specs are listed once per (app, revision) under ``specs`` and referenced by
    ``AssignedReplica.spec_key``, so a node running 50 replicas of one app carries one spec.
    """

    node: str
    replicas: list[AssignedReplica] = Field(default_factory=list)
    specs: dict[str, AppSpec] = Field(default_factory=dict)
    generation: Count = 0

    def spec_for(self, replica: AssignedReplica) -> AppSpec:
        return self.specs[replica.spec_key]

    def wire_dump(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, the specs' dumps shared (``core.wire_memo``): a
        node's next assignment carries nearly the same specs."""
        data = self.model_dump(mode="json", exclude={"specs"})
        data["specs"] = {key: dumped(spec) for key, spec in self.specs.items()}
        return data


class NodeCordon(Model):
    """Retained on ``nodes/<node>/cordon`` (writer: scheduler); absent = schedulable.

    A cordoned node gets no new replicas; a draining one also has its replicas moved away.
    """

    node: str
    drain: bool = False
    reason: str = ""
    since: float = 0.0


class SchedulerStatus(Model):
    """Retained on ``status/scheduler/<ns>/<app>`` (writer: scheduler): placement of one app.

    ``unplaceable`` replicas could not be placed; ``message`` says why, with the reasons
    counted per node (``0/5 nodes fit: 3 insufficient memory, 2 constraint zone``).
    """

    namespace: str
    name: str
    desired: Count = 0
    placed: Count = 0
    unplaceable: Count = 0
    leaving: Count = 0
    message: str = ""
    reasons: dict[str, Count] = Field(default_factory=dict)
    nodes: dict[str, Count] = Field(default_factory=dict, description="node -> replicas")
    ts: float = 0.0
    waiting_for: str = Field(
        default="",
        description="why no replica is placed yet: depends_on conditions not met ('' none)",
    )


# -- observed replicas (writer: each agent for itself) ---------------------------------

ReplicaPhase = Literal[
    "pending",
    "pulling",
    "creating",
    "running",
    "exited",
    "backoff",
    "terminating",
    "image_pull_failed",
    "failed",
]


class ReplicaStatus(Model):
    id: str
    namespace: str
    app: str
    revision: Count
    node: str
    phase: ReplicaPhase
    container_id: str = ""
    endpoints: dict[str, str] = Field(default_factory=dict, description="port name -> host:port")
    restarts: Count = 0
    exit_code: Int64 | None = None
    reason: str = ""
    started_at: float | None = None
    since: float = 0.0
    exec_ready: bool | None = Field(
        default=None,
        description="verdict of an exec readiness probe, run by the agent (None: no verdict yet)",
    )


class NodeReplicas(Model):
    """Retained on ``nodes/<node>/replicas``: what the agent observes on its node."""

    node: str
    replicas: list[ReplicaStatus] = Field(default_factory=list)
    ts: float = 0.0


# -- health (writer: health monitor) ---------------------------------------------------


class ReplicaHealth(Model):
    id: str
    revision: Count
    node: str
    endpoint: str = Field(description="host:port the balancer should send traffic to")
    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="port name -> host:port, every published port (for TCP routes)",
    )
    ready: bool
    terminating: bool = False
    since: float = 0.0
    reason: str = ""
    live: bool = Field(default=True, description="False once the liveness probe failed")
    started_at: float | None = Field(
        default=None, description="the container start the verdicts apply to (its incarnation)"
    )


class AppHealth(Model):
    """Retained on ``health/<ns>/<app>``: readiness of every replica of one app."""

    namespace: str
    name: str
    replicas: list[ReplicaHealth] = Field(default_factory=list)
    ts: float = 0.0

    @property
    def ready(self) -> list[ReplicaHealth]:
        return [r for r in self.replicas if r.ready and not r.terminating]


# -- presence (writer: every service for itself) ---------------------------------------


class Presence(Model):
    """Retained on ``services/<service>/<instance>``; the last will says ``offline``."""

    service: str
    instance: str
    status: Literal["online", "offline"] = "online"
    version: str = ""
    host: str = ""
    pid: Count = 0
    started: float = 0.0
    leader: bool = False
    metrics: str | None = Field(default=None, description="host:port of its /metrics")


# -- events (anyone; not retained) -----------------------------------------------------


class Event(Model):
    kind: str
    message: str
    namespace: str | None = None
    app: str | None = None
    node: str | None = None
    replica: str | None = None
    severity: Literal["info", "warning", "error"] = "info"
    data: dict[str, object] = Field(default_factory=dict)


# -- metrics (not retained; QoS 0) -----------------------------------------------------


class ReplicaRouteMetrics(Model):
    """One balancer instance's view of one replica of an app over the last window."""

    rps: float = 0.0
    inflight: Count = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: Count = 0


class RouteMetrics(Model):
    """One balancer instance's view of one app over the last window."""

    rps: float = 0.0
    inflight: Count = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    errors: Count = 0
    requests: Count = 0
    held: Count = Field(default=0, description="requests waiting for a replica (scale from zero)")
    replicas: dict[str, float] = Field(default_factory=dict, description="replica id -> rps")
    per_replica: dict[str, ReplicaRouteMetrics] = Field(
        default_factory=dict, description="replica id -> rates, in-flight, latency"
    )


class TcpRouteMetrics(Model):
    """One balancer instance's view of one app's TCP routes over the last window."""

    connections: Count = Field(default=0, description="connections accepted in the window")
    active: Count = Field(default=0, description="connections open now")
    bytes_in: Count = Field(default=0, description="client -> replica bytes in the window")
    bytes_out: Count = Field(default=0, description="replica -> client bytes in the window")
    errors: Count = Field(
        default=0, description="connections closed unserved: no ready replica, none reachable"
    )
    per_replica: dict[str, Count] = Field(
        default_factory=dict, description="replica id -> connections open now"
    )


class LbMetrics(Model):
    """``metrics/lb/<instance>``, every second: per app ``<ns>/<name>``."""

    instance: str
    window: float = 1.0
    apps: dict[str, RouteMetrics] = Field(default_factory=dict)
    tcp: dict[str, TcpRouteMetrics] = Field(
        default_factory=dict, description="per app <ns>/<name>: its TCP routes (L4)"
    )
    ts: float = 0.0


class ReplicaUsage(Model):
    cpu: float = Field(description="cores in use")
    memory: Count = Field(description="bytes in use")
    memory_limit: Count = 0
    namespace: str = ""
    app: str = ""


class NodeMetrics(Model):
    """``metrics/nodes/<node>``, every few seconds: usage of every replica on the node."""

    node: str
    replicas: dict[str, ReplicaUsage] = Field(default_factory=dict)
    ts: float = 0.0


# -- logs (request/stream; not retained) -----------------------------------------------


class LogsRequest(Model):
    """``logs/request``: stream the logs of an app's replicas to ``logs/stream/<id>``.

    Every agent running a matching replica answers. With ``follow`` the agent keeps
    streaming while the requester re-sends the same request within ``lease`` seconds.
    """

    id: str
    namespace: str = "default"
    app: str
    replica: str | None = None
    tail: Count | None = None
    follow: bool = False
    lease: float = Field(default=10.0, gt=0)


class LogChunk(Model):
    """``logs/stream/<id>``: a batch of lines from one replica; ``eof`` ends its stream."""

    request: str
    node: str
    replica: str
    lines: list[str] = Field(default_factory=list)
    eof: bool = False
    error: str = ""


class AcmeChallenge(Model):
    """``acme/challenges/<token>``: an HTTP-01 key authorization (RFC 8555 8.3) that every
    balancer answers at ``/.well-known/acme-challenge/<token>`` on plain HTTP, whichever
    instance ordered the certificate. Not a secret: the ACME server fetches it in clear."""

    token: str = Field(pattern=r"^[A-Za-z0-9_-]{1,256}$")
    key_authorization: str = Field(max_length=1024)
    host: str
    instance: str
    expires: float  # wall-clock seconds: answered until then at most


class WakeUp(Model):
    """``wake/<ns>/<app>``: the balancer holds requests for an app scaled to zero."""

    namespace: str
    name: str
    held: Count = 0


# -- autoscaler status (writer: scaler) ------------------------------------------------

ScalerCode = Literal[
    "scale_up",
    "scale_down",
    "wake",
    "to_zero",
    "bounds",
    "hold",
    "stabilising",
    "cooldown",
    "at_zero",
    "no_metrics",
    "error",
]


class ScalerStatus(Model):
    """Retained on ``status/scaler/<ns>/<app>``: the autoscaler's last decision and why."""

    namespace: str
    name: str
    current: Count = Field(description="desired replicas in the app record")
    desired: Count = Field(description="what the autoscaler wants now")
    code: ScalerCode
    reason: str
    metrics: dict[str, float] = Field(default_factory=dict)
    last_scaled: float | None = Field(default=None, description="unix time of the last change")
    ts: float = 0.0
