"""The reconcile: the node's assignment and containers in, actions out.

``on_assign`` takes the retained assignment (a deleted one means: run nothing); ``once``
is the runner's reconcile of the node's one key. It accounts exits (restart back-off),
forgets replicas that are gone, asks ``plan.py`` for the diff and ``Liveness`` for the
restarts due, hands each replica's steps to ``Actions``, and brings the exec probes in
line with the running containers. It returns when to look again (a back-off ending).
Nothing runs before the retained assignment was seen and the engine listed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

from core.state import NodeAssignment
from services.agent.actions import Actions, Step
from services.agent.exec_probes import ExecProbes
from services.agent.liveness import Liveness
from services.agent.node import Node
from services.agent.plan import ReplicaRecord, on_exit, plan

#: The runner's one key: the whole node is reconciled at once.
NODE_KEY = "node"


def held_until(records: Mapping[str, ReplicaRecord], now: float) -> dict[str, float]:
    """Replicas waiting after a failed action (``retry_at``) or a liveness restart's
    back-off, and until when."""
    held = {
        rid: max(r.retry_at or 0.0, r.next_liveness_restart or 0.0) for rid, r in records.items()
    }
    return {rid: until for rid, until in held.items() if until > now}


class Reconcile:
    def __init__(
        self, node: Node, actions: Actions, liveness: Liveness, probes: ExecProbes
    ) -> None:
        self.node = node
        self.actions = actions
        self.liveness = liveness
        self.probes = probes

    def on_assign(self, _: str, received: NodeAssignment | None) -> None:
        """The retained assignment of this node changed (None: deleted, nothing to run)."""
        node = self.node
        if received is None:
            received = NodeAssignment(node=node.id)
        missing = {r.spec_key for r in received.replicas} - set(received.specs)
        if missing:
            node.log.warning("assignment without specs dropped", missing=sorted(missing))
            return
        node.assignment = received
        node.log.debug(
            "assignment", replicas=len(received.replicas), generation=received.generation
        )
        node.changed()

    async def once(self, key: str = NODE_KEY) -> float | None:
        node = self.node
        if not node.synced:
            return None
        if not node.engine_ready or not node.listed:
            return None  # the engine loop marks the node again once the engine is back
        now = time.time()
        self._account_exits(now)
        self._forget_gone()
        running = self.actions.running
        decided = plan(node.assignment, node.containers.values(), node.records, set(running), now)
        steps: dict[str, list[Step]] = {}
        for removal in decided.remove:
            steps.setdefault(removal.container.replica, []).append(
                functools.partial(self.actions.remove, removal)
            )
        for replica in decided.create:
            spec = node.assignment.spec_for(replica)  # type: ignore[union-attr]
            steps.setdefault(replica.id, []).append(
                functools.partial(self.actions.create, replica, spec)
            )
        for replica, container in decided.start:
            steps.setdefault(replica.id, []).append(
                functools.partial(self.actions.start, replica, container)
            )
        # Liveness: restart the current container start of a replica found not live.
        verdicts = self.liveness.verdicts()
        retrying = held_until(node.records, now)
        wake_in = decided.wake_in
        for restart in self.liveness.due(verdicts, busy={*running, *steps, *retrying}):
            steps[restart.replica.id] = [functools.partial(self.liveness.restart, restart)]
        for rid, todo in steps.items():
            self.actions.spawn(rid, todo)
        pending = {v.replica for v in verdicts} & retrying.keys()
        if pending:  # a failed restart is tried again after its back-off
            soonest = min(retrying[rid] for rid in pending) - now
            wake_in = soonest if wake_in is None else min(wake_in, soonest)
        self.probes.sync()
        return wake_in

    def _forget_gone(self) -> None:
        """Drop records of replicas that are neither assigned, present nor being worked on."""
        node = self.node
        if node.assignment is None:
            return
        keep = node.assigned()
        keep.update(c.replica for c in node.containers.values())
        keep.update(self.actions.running)
        for rid in [rid for rid in node.records if rid not in keep]:
            del node.records[rid]
        if self.actions.secrets is not None:
            for rid in self.actions.secrets[1].sweep(keep):
                node.log.debug("secret files of a gone replica removed", replica=rid)

    def _account_exits(self, now: float) -> None:
        node = self.node
        if node.assignment is None:
            return
        assigned = {r.id: r for r in node.assignment.replicas}
        for c in node.containers.values():
            replica = assigned.get(c.replica)
            if replica is None or not c.exited or c.revision != replica.revision:
                continue
            if c.replica in self.actions.running:
                continue
            record = node.records.setdefault(c.replica, ReplicaRecord(since=now))
            if on_exit(record, c, now, node.options.restart):
                delay = (record.restart_at or now) - now
                node.log.info(
                    "replica exited",
                    replica=c.replica,
                    exit_code=c.exit_code,
                    reason=c.exit_reason,
                    restart_in=round(delay, 2),
                    attempts=record.attempts,
                )
                node.event(
                    "replica_exited",
                    f"replica {c.replica} exited with code {c.exit_code} ({c.exit_reason}); "
                    f"restart in {delay:.2f}s",
                    severity="warning",
                    namespace=c.namespace,
                    app=c.app,
                    replica=c.replica,
                    data={"exit_code": c.exit_code, "reason": c.exit_reason},
                )
                node.report_due.set()
