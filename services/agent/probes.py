"""The agent's probe decisions, as pure functions (see core/README.md, "Probes").

- **Liveness restarts ordered by the health monitor**: ``liveness_restarts`` picks the
  running replicas of this node whose published ``ReplicaHealth`` says ``live=False``
  about the *current* container start (``started_at`` equal), once per verdict.
- **exec probes**, which only the agent can run (inside the container): ``exec_targets``
  says which probes should run on which container start, ``ProbeState``/``step`` is the
  threshold state machine (same semantics as the health monitor's), ``next_probe_at``
  the schedule, ``exec_verdict`` what is reported in ``ReplicaStatus.exec_ready``.

Probe state belongs to one container start: every key carries ``started_at``, so a
restart starts afresh. Nothing here talks to Docker or to the bus.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from core.probes import ProbeRole, ProbeState
from core.spec import Probe
from core.state import AppHealth, AssignedReplica, NodeAssignment, NodeReplicas
from services.agent.containers import Container

ROLES: tuple[ProbeRole, ...] = ("readiness", "liveness")

#: One verdict about one container start: (replica id, started_at).
Incarnation = tuple[str, float]


# -- liveness restarts ordered by the health monitor -----------------------------------


@dataclass(frozen=True, slots=True)
class NotLive:
    """A verdict that one container start of a replica is not live."""

    replica: str
    revision: int
    started_at: float  # the container start the verdict is about
    reason: str
    source: Literal["health", "exec"] = "health"

    @property
    def incarnation(self) -> Incarnation:
        return (self.replica, self.started_at)


@dataclass(frozen=True, slots=True)
class LivenessRestart:
    replica: AssignedReplica
    container: Container
    verdict: NotLive


def not_live(health: Iterable[AppHealth], node: str) -> list[NotLive]:
    """The health monitor's ``live=False`` verdicts about replicas of ``node``."""
    out: list[NotLive] = []
    for app in health:
        for r in app.replicas:
            if r.live or r.node != node or r.terminating or r.started_at is None:
                continue
            out.append(NotLive(r.id, r.revision, r.started_at, r.reason or "liveness failed"))
    return out


def current_containers(
    assignment: NodeAssignment | None, containers: Iterable[Container]
) -> dict[str, tuple[AssignedReplica, Container]]:
    """Assigned replica id -> (replica, its running container of the assigned revision)."""
    if assignment is None:
        return {}
    assigned = {r.id: r for r in assignment.replicas}
    out: dict[str, tuple[AssignedReplica, Container]] = {}
    for c in containers:
        replica = assigned.get(c.replica)
        if replica is None or not c.running or c.revision != replica.revision:
            continue
        if c.started_at is None:
            continue
        best = out.get(c.replica)
        if best is None or (c.started_at, c.id) > (best[1].started_at or 0.0, best[1].id):
            out[c.replica] = (replica, c)
    return out


def liveness_restarts(
    verdicts: Iterable[NotLive],
    *,
    assignment: NodeAssignment | None,
    containers: Iterable[Container],
    busy: Collection[str],
    done: Collection[Incarnation],
) -> list[LivenessRestart]:
    """The containers to restart because they were found not live.

    A verdict counts only if it is about an assigned replica's *current* container start
    (same revision, ``started_at`` equal: a stale verdict about a previous start never
    restarts the new one), and was not acted on already (``done``): one restart per
    verdict. Replicas with an action in flight (``busy``) wait: the caller evaluates
    again once the action is over.
    """
    current = current_containers(assignment, containers)
    out: dict[str, LivenessRestart] = {}
    for v in verdicts:
        found = current.get(v.replica)
        if found is None or v.replica in busy or v.incarnation in done or v.replica in out:
            continue
        replica, container = found
        if replica.revision != v.revision or container.started_at != v.started_at:
            continue
        out[v.replica] = LivenessRestart(replica, container, v)
    return [out[k] for k in sorted(out)]


def prune_done(done: Iterable[Incarnation], containers: Iterable[Container]) -> set[Incarnation]:
    """Forget handled verdicts whose container start is gone (restarted or removed)."""
    alive = {(c.replica, c.started_at) for c in containers if c.started_at is not None}
    return {d for d in done if d in alive}


# -- exec probes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecTarget:
    """One exec probe to run on one container start."""

    replica: AssignedReplica
    role: ProbeRole
    container_id: str
    started_at: float
    probe: Probe

    @property
    def key(self) -> tuple[str, ProbeRole]:
        return (self.replica.id, self.role)

    @property
    def command(self) -> list[str]:
        return list(self.probe.exec or [])


def exec_targets(
    assignment: NodeAssignment | None, containers: Iterable[Container]
) -> dict[tuple[str, ProbeRole], ExecTarget]:
    """Every exec probe that should be running now: (replica, role) -> target.

    Only running containers of the assigned revision are probed; a changed
    ``container_id``/``started_at`` means a new container start, i.e. a fresh state.
    """
    out: dict[tuple[str, ProbeRole], ExecTarget] = {}
    if assignment is None:
        return out
    for rid, (replica, c) in current_containers(assignment, containers).items():
        spec = assignment.specs.get(replica.spec_key)
        if spec is None:
            continue
        for role in ROLES:
            probe = spec.health.readiness if role == "readiness" else spec.health.liveness
            if probe is None or probe.exec is None:
                continue
            assert c.started_at is not None
            out[(rid, role)] = ExecTarget(replica, role, c.id, c.started_at, probe)
    return out


def next_probe_at(target: ExecTarget, last: float | None) -> float:
    """When to probe next: ``initial_delay`` after the container start, then every
    ``interval`` after the previous probe began."""
    if last is None:
        return target.started_at + target.probe.initial_delay
    return last + target.probe.interval


def exec_verdict(state: ProbeState) -> bool | None:
    """What ``ReplicaStatus.exec_ready`` says: None before the first result."""
    return None if state.results == 0 else state.ok


def seeded_readiness(previous: NodeReplicas | None, target: ExecTarget) -> bool | None:
    """The exec readiness verdict this node reported before for the same container start."""
    if previous is None or target.role != "readiness":
        return None
    for r in previous.replicas:
        if r.id == target.replica.id and r.started_at == target.started_at:
            return r.exec_ready
    return None


def liveness_failed(before: ProbeState, after: ProbeState) -> bool:
    """The liveness probe just reached its failure threshold: restart the container."""
    return before.ok and not after.ok


def exec_result(exit_code: int | None, output: str) -> tuple[bool, str]:
    """An exec probe passes when the command exits 0; the reason quotes its output."""
    if exit_code == 0:
        return True, ""
    tail = " ".join(output.split())[-200:]
    reason = f"exec probe exited {exit_code}" if exit_code is not None else "exec probe failed"
    return False, f"{reason}: {tail}" if tail else reason
