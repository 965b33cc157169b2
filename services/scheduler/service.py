"""The scheduler service: the bus shell around ``cluster.Cluster``.

Handlers feed the retained inputs to the cluster and mark keys dirty; three reconcile
runners do the work: ``apps`` (place one app), ``assign`` (publish one node's whole set,
debounced so a burst becomes one message per node) and ``status`` (publish one app's
placement status). A liveness tick declares silent nodes lost. Only the elected leader
(``core.leadership``) holds a ``Cluster`` and writes; a standby keeps the retained views
warm and rebuilds from them when it takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.authorizer import Authorizer
from core.channels import (
    APPS,
    HEALTH,
    NODE,
    NODE_ASSIGN,
    NODE_CORDON,
    NODE_INFO,
    REBALANCE,
    SCHEDULER_STATUS,
)
from core.codec import Envelope
from core.commands import NodeCommand, RebalanceCommand, RebalanceMove, RebalancePlan, Reply
from core.config import ServiceConfig
from core.errors import ShoalError
from core.keys import AppKey
from core.runner import Reconciler
from core.service import Service
from core.state import (
    AppHealth,
    AppState,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    SchedulerStatus,
)
from services.scheduler.cluster import LOST_GRACE, Cluster, Outcome
from services.scheduler.prom import SchedulerCollector
from services.scheduler.read_lag import ReadLag


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    #: a node not heard from for this long is unreachable: no new replicas; its replicas
    #: stay while the health monitor finds them ready
    node_grace: float = 6.0
    #: a node not heard from for this long (last will or silence) is lost: every replica
    #: it runs is placed elsewhere, even those still passing their probes
    lost_grace: float = LOST_GRACE
    #: node assignments are published this long after their first change (batching)
    debounce: float = 0.05
    #: seed of the walk order and replica ids (replayable placements)
    seed: int = 0
    #: feasible nodes scored per placement (None: max(8, log2 n))
    candidates: int | None = None
    #: replicas of apps never seen since taking over are kept this long (a broker that
    #: lost its retained apps must not make the scheduler delete everything)
    orphan_grace: float = 5.0
    #: how often node liveness is checked
    tick: float = 0.5
    #: every app is reconciled again this often (repairs anything missed)
    resync: float = 30.0
    #: the identities file: node commands are for admins only (None: authorisation off)
    auth: Path | None = None


def _same(a: NodeAssignment, b: NodeAssignment) -> bool:
    """One publication of a node's assignment and its copy from the broker."""
    return a.generation == b.generation and a.replicas == b.replicas


def _ready_ids(health: AppHealth | None) -> set[str] | None:
    """The ids of an app's ready replicas (None: no health record at all)."""
    return {r.id for r in health.ready} if health is not None else None


class SchedulerService(Service):
    name = "scheduler"

    def __init__(self, config: ServiceConfig, options: SchedulerOptions | None = None) -> None:
        super().__init__(config)
        self.options = options or SchedulerOptions()
        self.authz = Authorizer(self.options.auth)
        self.leadership = self.elect_leader(
            on_elected=self._take_over,
            on_deposed=self._step_down,
        )
        self.cluster: Cluster | None = None
        # The retained inputs (views of the bus once set up): what a new leader starts from.
        self.cordons: Mapping[str, NodeCordon] = {}
        self.assignments: Mapping[str, NodeAssignment] = {}
        self.infos: Mapping[str, NodeInfo] = {}
        self.states: Mapping[AppKey, AppState] = {}
        self.health: Mapping[AppKey, AppHealth] = {}
        self.statuses: Mapping[AppKey, SchedulerStatus] = {}
        self._seen: dict[str, float] = {}
        #: how far behind the bus we read, from the heartbeats' timestamps
        self.read_lag = ReadLag()
        self._lag_said = False  # the lag passed a second and was logged
        #: node -> the assignments we published, from the last one the broker sent back
        self._published: dict[str, list[NodeAssignment]] = {}
        self._status_sent: dict[AppKey, SchedulerStatus] = {}
        self._unplaceable_said: dict[AppKey, str] = {}
        self._drained_said: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.apps: Reconciler[AppKey] = Reconciler(
            "scheduler-apps",
            self._reconcile_app,
            keys=lambda: list(self.cluster.apps) if self.cluster is not None else [],
            resync=self.options.resync,
        )
        self.assign: Reconciler[str] = Reconciler("scheduler-assign", self._publish_node)
        self.status: Reconciler[AppKey] = Reconciler("scheduler-status", self._publish_status)
        self.metrics.register(SchedulerCollector(self))

    # -- wiring -------------------------------------------------------------------------

    async def setup(self) -> None:
        bus = self.bus
        self.cordons = await bus.view(NODE_CORDON)
        self.assignments = await bus.view(NODE_ASSIGN, on_change=self._on_assign)
        self.infos = await bus.view(NODE_INFO, on_change=self._on_node)
        self.states = await bus.view(APPS, on_change=self._on_app)
        self.health = await bus.view(HEALTH, on_change=self._on_health)
        self.statuses = await bus.view(SCHEDULER_STATUS)
        await self.leadership.setup()
        await bus.answer(NODE, self._on_node_command, when=lambda: self.cluster is not None)
        await bus.answer(REBALANCE, self._on_rebalance, when=lambda: self.cluster is not None)
        bus.on_connect(self._on_reconnect)

    async def main(self) -> None:
        while True:
            await self.bus.wait_connected(None)
            if await self.bus.settle(timeout=30):
                break
        self.log.info(
            "retained state loaded",
            nodes=len(self.infos),
            apps=len(self.states),
            assignments=len(self.assignments),
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.apps.run(), name="scheduler-apps")
            tasks.create_task(self.assign.run(), name="scheduler-assign")
            tasks.create_task(self.status.run(), name="scheduler-status")
            tasks.create_task(self.leadership.run(), name="scheduler-election")
            tasks.create_task(self._liveness_loop(), name="scheduler-liveness")

    # -- leadership ---------------------------------------------------------------------

    def _step_down(self) -> None:
        self.cluster = None

    async def _take_over(self) -> None:
        """Become the writer: rebuild placements from the retained assignments."""
        now = time.monotonic()
        o = self.options
        cluster = Cluster(
            seed=o.seed,
            candidates=o.candidates,
            orphan_grace=o.orphan_grace,
            now=now,
            lost_grace=o.lost_grace,
        )
        for node_id, cordon in sorted(self.cordons.items()):
            cluster.set_cordon(node_id, True, cordon.drain)
        for _, assignment in sorted(self.assignments.items()):
            cluster.load(assignment, seen=now)
        for node_id, info in sorted(self.infos.items()):
            cluster.upsert_node(info, seen=self._seen.get(node_id, now))
        for key, state in sorted(self.states.items()):
            cluster.set_app(key, state)
        for key, health in sorted(self.health.items()):
            cluster.set_ready(key, _ready_ids(health))
        # A broker that restarted may have lost every retained message: write ours.
        rewrite = self.bus.connects > 1
        self.cluster = cluster
        self._published.clear()
        self._status_sent = {} if rewrite else dict(self.statuses)
        self.log.info(
            "leading",
            nodes=len(cluster.nodes),
            apps=len(cluster.apps),
            replicas=len(cluster.replicas),
        )
        self._flush()
        if rewrite:
            for node_id in cluster.nodes:
                self.assign.mark_later(node_id, self.options.debounce)
        for key in list(cluster.apps):
            self.apps.mark(key)
        for key in self._status_sent:
            self.status.mark(key)
        if rewrite:
            for cordon in list(self.cordons.values()):
                with contextlib.suppress(ShoalError):
                    await self.bus.publish(NODE_CORDON, cordon)

    async def _on_reconnect(self) -> None:
        """We could not hear the nodes while disconnected, and they may still be
        reconnecting themselves: a double grace from now before any of them counts as lost.
        (``Leadership`` gives up the claim and re-elects once the retained state is back.)"""
        if self.bus.connects <= 1:
            return
        later = time.monotonic() + self.options.node_grace
        for node_id, seen in self._seen.items():
            self._seen[node_id] = max(seen, later)

    # -- inputs -------------------------------------------------------------------------

    def _on_app(self, key: AppKey, state: AppState | None) -> None:
        if self.cluster is not None:
            self.cluster.set_app(key, state)
            self.apps.mark(key)

    def _on_node(self, node_id: str, info: NodeInfo | None) -> None:
        cluster = self.cluster
        if info is None:
            self._seen.pop(node_id, None)
            self.read_lag.forget(node_id)
            if cluster is not None:
                self._mark_apps(cluster.remove_node(node_id))
                self._flush()
            return
        now = time.monotonic()
        if info.status != "offline":
            self._seen[node_id] = now
            if info.heartbeat > 0:
                self.read_lag.observe(node_id, info.heartbeat, time.time())
        if cluster is None:
            return
        before = cluster.nodes.get(node_id)
        was_lost = before.lost if before is not None else False
        was_unreachable = before.unreachable if before is not None else False
        self._mark_apps(cluster.upsert_node(info, seen=now))
        node = cluster.nodes[node_id]
        if node.unreachable and not was_unreachable:
            self._node_unreachable(node_id, info.reason or "offline")
        elif was_lost and not node.lost:
            self.log.info("node back; its stale replicas will be stopped", node=node_id)
        elif was_unreachable and not node.unreachable:
            self.log.info("node reachable again; nothing moved", node=node_id)
        self._flush()

    def _on_assign(self, node_id: str, assignment: NodeAssignment | None) -> None:
        cluster = self.cluster
        if cluster is None or self._is_echo(node_id, assignment):
            return
        # Another writer (a deposed leader, a stray client): our view wins.
        if node_id in cluster.nodes:
            self.log.warning("assignment written by someone else; rewriting", node=node_id)
            self.assign.mark_later(node_id, self.options.debounce)

    def _is_echo(self, node_id: str, assignment: NodeAssignment | None) -> bool:
        """Whether ``assignment`` is one of ours coming back (the older ones are done)."""
        if assignment is None:
            return False
        sent = self._published.get(node_id, [])
        for i, mine in enumerate(sent):
            if _same(mine, assignment):
                del sent[:i]
                return True
        return False

    def _on_health(self, key: AppKey, health: AppHealth | None) -> None:
        if self.cluster is not None and self.cluster.set_ready(key, _ready_ids(health)):
            self.apps.mark(key)
        if self.cluster is not None:
            self._mark_apps(self.cluster.dependants(key))  # a depends_on condition may hold

    async def _on_node_command(self, command: NodeCommand, env: Envelope) -> Reply | None:
        if self.cluster is None:
            return None  # only the leader answers (``when`` above keeps standbys quiet)
        self.authz.check(env, command.action, None)
        return await self._node_command(self.cluster, command)

    async def _node_command(self, cluster: Cluster, command: NodeCommand) -> Reply:
        node_id = command.node
        if node_id not in cluster.nodes:
            known = ", ".join(sorted(cluster.nodes)[:20]) or "none"
            return Reply(ok=False, errors=[f"unknown node {node_id!r} (known: {known})"])
        cordoned = command.action != "uncordon"
        drain = command.action == "drain"
        try:
            if cordoned:
                await self._write_cordon(node_id, drain, command.reason)
            else:
                await self.bus.clear(NODE_CORDON, node_id)
        except ShoalError as err:
            return Reply(ok=False, errors=[f"could not record the cordon: {err}"])
        self._drained_said.discard(node_id)
        self._mark_apps(cluster.set_cordon(node_id, cordoned, drain))
        self._flush()
        if drain:
            self.assign.mark_later(node_id, self.options.debounce)
        done = {"cordon": "cordoned", "uncordon": "uncordoned", "drain": "draining"}
        await self.emit(
            f"node_{done[command.action]}",
            f"node {node_id} {done[command.action]}"
            + (f": {command.reason}" if command.reason else ""),
            node=node_id,
        )
        self.log.info("node " + done[command.action], node=node_id)
        return Reply(ok=True)

    async def _on_rebalance(self, command: RebalanceCommand, env: Envelope) -> RebalancePlan | None:
        cluster = self.cluster
        if cluster is None:
            return None
        if not command.dry_run:  # a plan only reads what every user may read
            self.authz.check(env, "rebalance", None)
        moves = cluster.rebalance_plan(command.max_moves, command.tolerance)
        listed = [
            RebalanceMove(
                replica=m.replica,
                namespace=m.app.namespace,
                app=m.app.name,
                source=m.source,
                target=m.target,
                reason=m.reason,
            )
            for m in moves
        ]
        if not moves:
            return RebalancePlan(dry_run=command.dry_run, message="the nodes are balanced")
        if command.dry_run:
            return RebalancePlan(dry_run=True, moves=listed, message=f"{len(moves)} moves planned")
        self._mark_apps(cluster.move(moves))
        self._flush()
        why = f": {command.reason}" if command.reason else ""
        for m in moves:
            await self.emit(
                "rebalance",
                f"moving {m.replica} {m.source} -> {m.target}{why} ({m.reason})",
                namespace=m.app.namespace,
                app=m.app.name,
                node=m.target,
                replica=m.replica,
            )
        self.log.info("rebalancing", moves=len(moves))
        return RebalancePlan(moves=listed, message=f"{len(moves)} moves started")

    async def _write_cordon(self, node_id: str, drain: bool, reason: str) -> None:
        cordon = NodeCordon(node=node_id, drain=drain, reason=reason, since=time.time())
        await self.bus.publish(NODE_CORDON, cordon)

    # -- work ---------------------------------------------------------------------------

    async def _reconcile_app(self, key: AppKey) -> float | None:
        cluster = self.cluster
        if cluster is None:
            return None
        if cluster.waiting_for_ready(key):
            # A drain waits on readiness: read the latest health even if it arrived
            # before the app did (handlers drop health of apps not known yet).
            cluster.set_ready(key, _ready_ids(self.health.get(key)))
        out = cluster.reconcile(key, time.monotonic())
        if out.freed:
            self._mark_apps(k for k in cluster.pending if k != key)
        if out.placed:
            self._mark_apps(cluster.dependants(key))  # a depends_on condition may hold
        self._flush()
        self.status.mark(key)
        await self._report(out)
        return out.requeue

    async def _report(self, out: Outcome) -> None:
        if out.placed or out.removed:
            self.log.info(
                "app placed",
                app=str(out.key),
                placed=len(out.placed),
                removed=len(out.removed),
                unplaceable=sum(p.count for p in out.unplaceable),
            )
        message = "; ".join(p.message for p in out.unplaceable)
        said = self._unplaceable_said.get(out.key, "")
        if message and message != said:
            reasons: dict[str, object] = {}
            for problem in out.unplaceable:
                reasons.update(problem.reasons)
            await self.emit(
                "unplaceable",
                f"{out.key}: {message}",
                namespace=out.key.namespace,
                app=out.key.name,
                severity="warning",
                data={"reasons": reasons, "count": sum(p.count for p in out.unplaceable)},
            )
            self.log.warning("replicas unplaceable", app=str(out.key), message=message)
        if message:
            self._unplaceable_said[out.key] = message
        else:
            self._unplaceable_said.pop(out.key, None)

    async def _publish_node(self, node_id: str) -> None:
        cluster = self.cluster
        if cluster is None:
            return
        node = cluster.nodes.get(node_id)
        if node is None:
            # the node was removed (its info cleared): no empty assignment left behind
            self._published.pop(node_id, None)
            await self.bus.clear(NODE_ASSIGN, node_id)
            return
        message = cluster.assignment(node_id)
        sent = self._published.setdefault(node_id, [])
        sent.append(message)
        try:
            await self.bus.publish(NODE_ASSIGN, message)
        except ShoalError:
            sent.remove(message)
            raise
        if node is not None and node.draining and not node.replicas:
            if node_id not in self._drained_said:
                self._drained_said.add(node_id)
                await self.emit("node_drained", f"node {node_id} drained", node=node_id)
        elif node_id in self._drained_said and node is not None and node.replicas:
            self._drained_said.discard(node_id)

    async def _publish_status(self, key: AppKey) -> None:
        cluster = self.cluster
        if cluster is None:
            return
        status = cluster.status(key, ts=time.time())
        sent = self._status_sent.get(key)
        if status is None:
            if sent is not None:
                await self.bus.clear(SCHEDULER_STATUS, key)
                del self._status_sent[key]
            return
        if sent is not None and sent.model_copy(update={"ts": 0.0}) == status.model_copy(
            update={"ts": 0.0}
        ):
            return
        await self.bus.publish(SCHEDULER_STATUS, status)
        self._status_sent[key] = status

    async def _liveness_loop(self) -> None:
        silent = False
        while True:
            await asyncio.sleep(self.options.tick)
            cluster = self.cluster
            if cluster is None:
                continue
            if not self.bus.connected:
                # Silence from every node is our own disconnection, not theirs.
                cluster.refresh(time.monotonic())
                continue
            before = {n.id for n in cluster.nodes.values() if n.unreachable}
            lag = self._current_lag()
            lost, affected = cluster.expire(time.monotonic(), self.options.node_grace, lag)
            if cluster.all_silent and not silent:
                self.log.warning("no node heard from: assuming a broker problem, moving nothing")
            silent = cluster.all_silent
            for node in cluster.nodes.values():
                if node.unreachable and node.id not in before:
                    self._node_unreachable(
                        node.id, f"no heartbeat for {self.options.node_grace:g}s"
                    )
            for node_id in lost:
                self._node_lost(node_id, f"no word from it for {self.options.lost_grace:g}s")
            self._mark_apps(affected)
            self._flush()

    def _current_lag(self) -> float:
        """The read lag, said in the log when it first passes a second (and again after
        it fell back below half of that)."""
        lag = self.read_lag.current()
        if lag > 1.0 and not self._lag_said:
            self._lag_said = True
            self.log.warning(
                "reading the bus behind; node graces extended by the lag", lag=round(lag, 2)
            )
        elif lag < 0.5 and self._lag_said:
            self._lag_said = False
            self.log.info("reading the bus in time again", lag=round(lag, 2))
        return lag

    def _node_lost(self, node_id: str, why: str) -> None:
        self.log.warning("node lost; replacing its replicas", node=node_id, reason=why)
        self._emit_later("node_lost", f"node {node_id} lost: {why}", node_id)

    def _node_unreachable(self, node_id: str, why: str) -> None:
        self.log.warning(
            "node unreachable; its replicas stay while they pass their probes",
            node=node_id,
            reason=why,
            lost_after=self.options.lost_grace,
        )
        self._emit_later(
            "node_unreachable",
            f"node {node_id} unreachable: {why}; its ready replicas stay, the others move "
            f"(all of them after {self.options.lost_grace:g}s without word)",
            node_id,
        )

    def _emit_later(self, kind: str, message: str, node_id: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self.emit(kind, message, node=node_id, severity="warning")
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- helpers ------------------------------------------------------------------------

    def _flush(self) -> None:
        if self.cluster is None:
            return
        for node_id in self.cluster.take_dirty():
            self.assign.mark_later(node_id, self.options.debounce)

    def _mark_apps(self, keys: Iterable[AppKey]) -> None:
        for key in keys:
            self.apps.mark(key)
