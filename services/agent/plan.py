"""The agent's decisions, as pure functions of (assignment, containers, records, now).

``plan`` is the reconcile diff: which replicas to create, which exited containers to
start again, which containers to remove (gracefully or not), and when to look again.
``on_exit`` accounts one container exit in a replica's record (restart count, backoff,
crash loop); ``node_replicas`` builds the observed state the agent reports.
Nothing here talks to Docker or to the bus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.state import AssignedReplica, NodeAssignment, NodeReplicas, ReplicaPhase, ReplicaStatus
from services.agent.containers import Container

Hint = Literal["pulling", "creating", "image_pull_failed", "failed", "terminating"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Exponential back-off between restarts of a replica that keeps exiting.

    The first restart comes after ``initial``; each further exit that follows a run
    shorter than ``reset_after`` doubles the delay, up to ``cap``. A run of at least
    ``reset_after`` seconds resets the delay, and so does a run in which the health
    monitor's readiness probe found the replica ready: back-off protects the node from a
    container that cannot come up, not from one that served and was killed (``docker
    kill``, a chaos tool, the kernel), which comes back after ``initial`` however often
    that happens. From the second quick exit in a row the replica is in a crash loop and
    reported as ``backoff``.
    """

    initial: float = 0.25
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 10.0

    def delay(self, attempts: int) -> float:
        return float(min(self.cap, self.initial * self.factor**attempts))


@dataclass(slots=True)
class ReplicaRecord:
    """What the agent remembers about one replica beyond what Docker shows."""

    restarts: int = 0
    attempts: int = 0  # consecutive quick exits: drives the back-off
    restart_at: float | None = None  # when the exited container may start again
    next_liveness_restart: float | None = None  # an earlier one waits (back-off)
    exit_code: int | None = None
    reason: str = ""
    accounted_exit: tuple[str, float | None] | None = None  # (container id, finished_at)
    hint: Hint | None = None  # an in-progress or failed step Docker cannot show
    hint_reason: str = ""
    retry_at: float | None = None  # after a failed pull/create/start
    failures: int = 0  # consecutive failed pulls/creates/starts
    since: float = 0.0
    exec_ready: tuple[float, bool] | None = None  # (container start, exec readiness verdict)
    served: float | None = None  # the container start a readiness probe once found ready
    delay: float = 0.0  # the back-off before the restart after the last exit


def remembered(previous: NodeReplicas | None, node: str, now: float) -> dict[str, ReplicaRecord]:
    """Restart counters from this node's last report before the agent restarted.

    Docker does not count Shoal's restarts (its restart policy is ``no``), so without this
    an adopted replica would report ``restarts=0`` and a crash loop would look fresh.
    """
    if previous is None or previous.node != node:
        return {}
    return {
        r.id: ReplicaRecord(restarts=r.restarts, exit_code=r.exit_code, reason=r.reason, since=now)
        for r in previous.replicas
        if r.restarts or r.exit_code is not None
    }


def on_exit(record: ReplicaRecord, container: Container, now: float, policy: RestartPolicy) -> bool:
    """Account an exit of ``container``; False when this exit was accounted already."""
    key = (container.id, container.finished_at)
    if record.accounted_exit == key:
        return False
    record.accounted_exit = key
    ran_for = (
        (container.finished_at - container.started_at)
        if container.finished_at is not None and container.started_at is not None
        else 0.0
    )
    served = container.started_at is not None and record.served == container.started_at
    if ran_for >= policy.reset_after or served:
        record.attempts = 0
    record.exit_code = container.exit_code
    record.reason = container.exit_reason
    record.delay = policy.delay(record.attempts)
    record.restart_at = now + record.delay
    record.attempts += 1
    record.since = now
    return True


def on_liveness_restart(
    record: ReplicaRecord, ran_for: float, now: float, policy: RestartPolicy
) -> None:
    """Account a restart for failing liveness as an exit is accounted: a replica restarted
    again and again for not being live backs off like a crash loop (its next liveness
    restart waits), and a run of ``reset_after`` seconds forgives it."""
    if ran_for >= policy.reset_after:
        record.attempts = 0
    record.next_liveness_restart = now + policy.delay(record.attempts)
    record.attempts += 1


def retry_delay(failures: int, initial: float = 1.0, cap: float = 60.0) -> float:
    """Back-off after a failed pull, create or start (``failures`` >= 1)."""
    return float(min(cap, initial * 2 ** max(0, failures - 1)))


# -- the reconcile diff ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Removal:
    container: Container
    graceful: bool  # drain + SIGTERM + grace for a running container
    why: str


@dataclass(frozen=True, slots=True)
class Plan:
    create: tuple[AssignedReplica, ...] = ()
    start: tuple[tuple[AssignedReplica, Container], ...] = ()
    remove: tuple[Removal, ...] = ()
    wake_in: float | None = None  # look again after this many seconds

    @property
    def empty(self) -> bool:
        return not (self.create or self.start or self.remove)


def _best(containers: list[Container]) -> Container:
    """The container to keep among several for one replica: running first, then newest."""
    return max(
        containers,
        key=lambda c: (c.running, c.state == "created", c.started_at or 0.0, c.id),
    )


def group_by_replica(containers: Iterable[Container]) -> dict[str, list[Container]]:
    out: dict[str, list[Container]] = {}
    for c in containers:
        out.setdefault(c.replica, []).append(c)
    return out


def plan(
    assignment: NodeAssignment | None,
    containers: Iterable[Container],
    records: Mapping[str, ReplicaRecord],
    busy: set[str],
    now: float,
) -> Plan:
    """Converge Docker to the assignment.

    ``assignment`` None means "not known yet" (no retained value seen): then nothing is
    removed, since an agent that just started must not treat its replicas as orphans.
    Replicas in ``busy`` have an action in flight and are left alone.
    """
    by_replica = group_by_replica(containers)
    assigned = {r.id: r for r in assignment.replicas} if assignment is not None else {}
    create: list[AssignedReplica] = []
    start: list[tuple[AssignedReplica, Container]] = []
    remove: list[Removal] = []
    wakes: list[float] = []

    def wait_until(t: float | None) -> bool:
        if t is not None and t > now:
            wakes.append(t - now)
            return True
        return False

    for rid, replica in assigned.items():
        if rid in busy:
            continue
        record = records.get(rid)
        found = by_replica.get(rid, [])
        current = [c for c in found if c.revision == replica.revision]
        for c in found:
            if c.revision != replica.revision:
                remove.append(Removal(c, c.running, f"revision {c.revision} replaced"))
        if len(current) > 1:
            keep = _best(current)
            for c in current:
                if c is not keep:
                    remove.append(Removal(c, False, "duplicate container"))
            current = [keep]
        if not current:
            if len(current) < len(found):
                continue  # the old revision goes first; create once it is gone
            if record is not None and wait_until(record.retry_at):
                continue
            create.append(replica)
            continue
        c = current[0]
        if c.state == "created":
            if record is not None and wait_until(record.retry_at):
                continue
            start.append((replica, c))
        elif c.exited:
            if record is None:
                continue  # the shell accounts the exit first (on_exit), then plans again
            if wait_until(record.retry_at) or wait_until(record.restart_at):
                continue
            start.append((replica, c))

    if assignment is not None:
        for rid, found in by_replica.items():
            if rid in assigned or rid in busy:
                continue
            for c in found:
                remove.append(Removal(c, c.running, "no longer assigned"))

    return Plan(tuple(create), tuple(start), tuple(remove), min(wakes) if wakes else None)


# -- observed state --------------------------------------------------------------------


def replica_phase(container: Container | None, record: ReplicaRecord | None) -> ReplicaPhase:
    hint = record.hint if record is not None else None
    if hint == "terminating":
        return "terminating"
    if container is not None and container.running:
        return "running"
    if hint is not None:
        return hint
    if container is None:
        return "pending"
    if container.state == "created":
        return "creating"
    if container.exited:
        if record is not None and record.attempts >= 2:
            return "backoff"
        return "exited"
    return "pending"


def replica_status(
    *,
    replica: AssignedReplica | None,
    container: Container | None,
    record: ReplicaRecord | None,
    node: str,
    address: str,
) -> ReplicaStatus:
    assert replica is not None or container is not None
    phase = replica_phase(container, record)
    reason = ""
    exit_code = None
    if record is not None:
        exit_code = record.exit_code
        if record.hint is not None and phase == record.hint:
            reason = record.hint_reason
        elif phase in ("exited", "backoff", "running") and record.reason:
            reason = record.reason if phase != "running" else f"last exit: {record.reason}"
    if container is not None and container.exited and exit_code is None:
        exit_code = container.exit_code
        reason = reason or container.exit_reason
    return ReplicaStatus(
        id=replica.id if replica is not None else container.replica,  # type: ignore[union-attr]
        namespace=replica.namespace if replica is not None else container.namespace,  # type: ignore[union-attr]
        app=replica.app if replica is not None else container.app,  # type: ignore[union-attr]
        revision=replica.revision if replica is not None else container.revision,  # type: ignore[union-attr]
        node=node,
        phase=phase,
        container_id=container.id if container is not None else "",
        endpoints=container.endpoints(address)
        if container is not None and container.running
        else {},
        restarts=record.restarts if record is not None else 0,
        exit_code=exit_code,
        reason=reason,
        started_at=container.started_at if container is not None else None,
        since=record.since if record is not None else 0.0,
        exec_ready=_exec_ready(container, record),
    )


def _exec_ready(container: Container | None, record: ReplicaRecord | None) -> bool | None:
    """The exec readiness verdict, only if it is about the running container's start."""
    if record is None or record.exec_ready is None or container is None or not container.running:
        return None
    started_at, ready = record.exec_ready
    return ready if container.started_at == started_at else None


@dataclass(slots=True)
class Snapshot:
    """Everything ``node_replicas`` needs, gathered by the shell."""

    node: str
    address: str
    assignment: NodeAssignment | None
    containers: list[Container] = field(default_factory=list)
    records: dict[str, ReplicaRecord] = field(default_factory=dict)


def node_replicas(snap: Snapshot, now: float) -> NodeReplicas:
    """Observed state of every assigned replica and every container still present."""
    by_replica = group_by_replica(snap.containers)
    statuses: list[ReplicaStatus] = []
    seen: set[str] = set()
    replicas = snap.assignment.replicas if snap.assignment is not None else []
    for replica in replicas:
        seen.add(replica.id)
        found = [c for c in by_replica.get(replica.id, []) if c.revision == replica.revision]
        container = _best(found) if found else None
        statuses.append(
            replica_status(
                replica=replica,
                container=container,
                record=snap.records.get(replica.id),
                node=snap.node,
                address=snap.address,
            )
        )
    for rid, found in sorted(by_replica.items()):
        if rid in seen:
            continue
        container = _best(found)
        record = snap.records.get(rid)
        status = replica_status(
            replica=None, container=container, record=record, node=snap.node, address=snap.address
        )
        if status.phase != "terminating":
            # Not assigned any more: on its way out, whatever Docker says; endpoints stay
            # so health can report it terminating until it is gone.
            status = status.model_copy(update={"phase": "terminating"})
        statuses.append(status)
    return NodeReplicas(node=snap.node, replicas=statuses, ts=now)
