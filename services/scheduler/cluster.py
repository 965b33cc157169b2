"""The cluster as the scheduler sees it, and the reconcile of one app against it.

``Cluster`` is plain data and plain functions: nodes (capacity, labels, liveness,
cordons), apps (desired state, readiness) and replicas (where each one runs). Every input
arrives through a method that returns the app keys it may affect; ``reconcile(key, now)``
converges one app and reports what it did. Nothing here does I/O or reads a clock: the
caller passes ``now``. The service marks keys dirty and publishes the nodes in ``dirty``.

``plan(...)`` is the whole thing as one pure function over wire models: current
assignments, nodes and apps in; the new assignment of every node that changed out.

Node liveness (``node_condition``, ``expire``): a node whose agent left a last will
(``offline``) or sent nothing for ``grace`` seconds is *unreachable*: it gets no new
replicas, but the ones it runs stay placed while the health monitor (which probes replicas
directly, by endpoint) finds them ready. Only when a replica there is not ready, or when
nothing was heard from the node for ``lost_grace`` seconds, is it replaced: the node is
then *lost*, its replicas placed elsewhere and its assignment emptied (so an agent that
comes back removes them). An agent restart therefore moves nothing.

Reconciling one app (``reconcile``), in order:

0. replicas on unreachable nodes that health does not report ready go (replaced below);
1. app deleted: every replica goes (after ``orphan_grace`` if it was never seen since the
   scheduler started, so a broker that lost its retained apps deletes nothing);
2. replicas of revisions no longer wanted go;
3. revisions with too many active replicas shrink (``placement.removal_order``);
4. revisions with too few grow, newest first (``placement.select``); what cannot be placed
   is recorded with its reasons and retried when capacity appears; an app with no replica
   placed whose ``depends_on`` conditions do not hold is held instead (``depends``);
5. ``leaving`` replicas (on a draining node) go once enough others are ready.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.keys import AppKey
from core.spec import REGION_LABEL, AppSpec
from core.state import (
    AppState,
    AppVersion,
    AssignedReplica,
    NodeAssignment,
    NodeInfo,
    SchedulerStatus,
    spec_key,
)
from services.scheduler.checks import EPSILON, check_constraints, first_failure
from services.scheduler.depends import DependencyState, held_message, waiting_for
from services.scheduler.model import UNKNOWN, AppRecord, Demand, NodeView, Replica
from services.scheduler.placement import (
    NodeRing,
    Unplaceable,
    candidate_limit,
    explain,
    removal_order,
    select,
)
from services.scheduler.rebalance import Move, plan_moves
from services.scheduler.regions import (
    reachable_regions,
    region_counts,
    short_regions,
    surplus_victim,
    with_regions,
)
from services.scheduler.scorers import fused

Constraints = tuple[tuple[str, frozenset[str]], ...]

#: seconds with no word from a node (no heartbeat, or a last will) before it is lost and
#: every replica it runs is replaced, even those still passing their probes
LOST_GRACE = 30.0

NodeCondition = Literal["reachable", "unreachable", "lost"]


def node_condition(
    status: str, seen: float, now: float, grace: float, lost_grace: float
) -> NodeCondition:
    """A node's condition at ``now``, given its last status and when it was last heard.

    ``reachable``: heard within ``grace`` and not offline. ``unreachable``: offline (its
    agent's last will) or silent for more than ``grace``: keep its ready replicas, place
    nothing new. ``lost``: nothing heard for more than ``lost_grace``: replace everything.
    """
    quiet = now - seen
    if quiet > lost_grace:
        return "lost"
    if status == "offline" or quiet > grace:
        return "unreachable"
    return "reachable"


@dataclass(slots=True)
class Outcome:
    """What one ``reconcile`` did."""

    key: AppKey
    placed: list[Replica] = field(default_factory=list)
    removed: list[Replica] = field(default_factory=list)
    unplaceable: list[Unplaceable] = field(default_factory=list)
    #: capacity was released: apps waiting for room may fit now
    freed: bool = False
    #: call again after this many seconds
    requeue: float | None = None
    #: the app is gone and its record dropped
    deleted: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.placed or self.removed)


def constraints_of(spec: AppSpec) -> Constraints:
    return tuple(
        sorted((key, frozenset(values)) for key, values in spec.placement.constraints.items())
    )


def versions_of(state: AppState) -> dict[int, AppVersion]:
    if state.versions:
        return {v.revision: v for v in state.versions}
    only = AppVersion(revision=state.revision, spec=state.spec, replicas=state.replicas)
    return {state.revision: only}


class Cluster:
    def __init__(
        self,
        *,
        seed: int = 0,
        candidates: int | None = None,
        orphan_grace: float = 0.0,
        now: float = 0.0,
        ids_seed: int | None = None,
        lost_grace: float = LOST_GRACE,
    ) -> None:
        """``seed`` fixes the walk order (replayable placements). Replica ids come from
        the system's randomness unless ``ids_seed`` is given (tests, benchmarks): ids must
        never repeat across restarts or clusters sharing a container engine."""
        self.nodes: dict[str, NodeView] = {}
        self.apps: dict[AppKey, AppRecord] = {}
        self.replicas: dict[str, Replica] = {}
        #: app -> what could not be placed at its last reconcile
        self.pending: dict[AppKey, list[Unplaceable]] = {}
        #: nodes whose assignment changed and must be published
        self.dirty: set[str] = set()
        #: app -> why its first replicas wait for its dependencies (``depends``)
        self.held: dict[AppKey, str] = {}
        #: node -> drain flag, for every cordoned node (known or not yet)
        self.cordons: dict[str, bool] = {}
        self.seed = seed
        self.candidates = candidates
        self.lost_grace = lost_grace
        #: the last ``expire`` found every live node silent and held off
        self.all_silent = False
        self.orphans_after = now + orphan_grace
        self._ids = random.Random(ids_seed) if ids_seed is not None else random.SystemRandom()
        self._specs: dict[str, AppSpec] = {}
        self._order: list[NodeView] | None = None
        self._rings: dict[Constraints, NodeRing] = {}
        #: app -> target nodes of replicas ``move`` marked leaving, for its next reconcile
        self.move_targets: dict[AppKey, list[str]] = {}
        #: apps with a minimum per region (kept here: a node joining must not scan them all)
        self.regional_apps: set[AppKey] = set()

    # -- nodes --------------------------------------------------------------------------

    def upsert_node(self, info: NodeInfo, seen: float) -> set[AppKey]:
        """A node's info arrived at time ``seen``; returns the apps to reconcile."""
        node = self.nodes.get(info.node)
        if node is None:
            node = NodeView(id=info.node, cordoned=info.node in self.cordons)
            node.draining = self.cordons.get(info.node, False)
            self.nodes[info.node] = node
            self._invalidate()
        was_usable = node.usable
        was_unreachable = node.unreachable
        grew = info.capacity.cpu > node.cpu or info.capacity.memory > node.memory
        if info.labels != node.labels:
            node.labels = dict(info.labels)
            self._invalidate()
            grew = True
        node.address = info.address
        node.cpu = info.capacity.cpu
        node.memory = info.capacity.memory
        node.status = info.status
        affected: set[AppKey] = set()
        if info.status == "offline":
            # The agent is gone, which says nothing about its containers: its replicas
            # stay while health finds them ready (reconcile), the node gets no new ones.
            if not was_unreachable and not node.lost:
                affected |= set(node.apps)
            return affected
        node.seen = seen
        node.silent = False
        if not node.lost:
            affected |= self._evict_overflow(node)
        if node.lost and info.status == "ready":
            node.lost = False
            self.dirty.add(node.id)  # re-send the empty set: its stale replicas stop
        if node.usable and (not was_usable or grew):
            affected |= set(self.pending)
        if node.usable and not was_usable:
            # a region may be reachable again: apps with a minimum per region rebalance
            affected |= self._regional()
        return affected

    def _regional(self) -> set[AppKey]:
        return set(self.regional_apps)

    def _evict_overflow(self, node: NodeView) -> set[AppKey]:
        """The node now reports less capacity than its replicas request: move the largest
        ones away until the rest fits (their apps place them elsewhere)."""
        affected: set[AppKey] = set()
        if node.cpu_used <= node.cpu + EPSILON and node.mem_used <= node.memory:
            return affected
        cpu = node.cpu if node.cpu > 0 else 1.0
        mem = node.memory if node.memory > 0 else 1
        biggest = sorted(
            node.replicas.values(), key=lambda r: (-(r.cpu / cpu + r.memory / mem), r.id)
        )
        for replica in biggest:
            if node.cpu_used <= node.cpu + EPSILON and node.mem_used <= node.memory:
                break
            self._unbind(replica)
            affected.add(replica.app_key)
        return affected

    def remove_node(self, node_id: str) -> set[AppKey]:
        """The node's info was deleted: it is gone for good. Its replicas are placed
        elsewhere and it leaves the books (marked dirty: its assignment is to be cleared;
        an agent reads a cleared assignment as an empty one)."""
        node = self.nodes.get(node_id)
        if node is None:
            return set()
        affected = self.lose_node(node_id) if not node.lost else set()
        del self.nodes[node_id]
        return affected

    def lose_node(self, node_id: str) -> set[AppKey]:
        """Declare a node lost: its replicas leave the books (to be placed elsewhere) and
        its assignment becomes empty, so that it stops them if it ever comes back."""
        node = self.nodes[node_id]
        node.lost = True
        affected: set[AppKey] = set()
        for replica in list(node.replicas.values()):
            self._unbind(replica)
            affected.add(replica.app_key)
        self.dirty.add(node_id)
        return affected

    def expire(self, now: float, grace: float, lag: float = 0.0) -> tuple[list[str], set[AppKey]]:
        """Apply ``node_condition`` to every node: (lost nodes, apps to reconcile).

        ``lag``: how far behind its reading of the bus the caller is (``read_lag``); it
        is added to both graces, so a backlog of unread heartbeats loses no node.

        A node silent for more than ``grace`` becomes unreachable (its apps are
        reconciled: replicas health does not find ready move); one not heard from for
        more than ``lost_grace`` is lost. When every live node is silent at once, the
        fault is almost surely between the scheduler and the broker (or a broker restart
        the agents are still reconnecting from), not in all the nodes: nothing changes and
        ``all_silent`` is set. Replicas that fail their probes still move.
        """
        live = [n for n in self.nodes.values() if not n.lost]
        grace += lag
        silent = [n for n in live if now - n.seen > grace]
        self.all_silent = bool(silent) and len(silent) == len(live)
        if self.all_silent:
            return [], set()
        affected: set[AppKey] = set()
        lost: list[str] = []
        for node in silent:
            condition = node_condition(node.status, node.seen, now, grace, self.lost_grace + lag)
            if condition == "lost":
                lost.append(node.id)
                affected |= self.lose_node(node.id)
            elif not node.silent:
                if not node.unreachable:
                    affected |= set(node.apps)
                node.silent = True
        return lost, affected

    def refresh(self, now: float) -> None:
        """Give every live node a fresh grace: the scheduler itself could not hear them
        (its broker connection was down), which says nothing about the nodes."""
        for node in self.nodes.values():
            if not node.lost:
                node.seen = max(node.seen, now)

    def set_cordon(self, node_id: str, cordoned: bool, drain: bool = False) -> set[AppKey]:
        """Cordon (no new replicas), drain (and move them all off) or uncordon a node."""
        drain = drain and cordoned
        if cordoned:
            self.cordons[node_id] = drain
        else:
            self.cordons.pop(node_id, None)
        node = self.nodes.get(node_id)
        if node is None:
            return set()
        was_usable_for_new = node.usable and not node.cordoned
        node.cordoned, node.draining = cordoned, drain
        affected: set[AppKey] = set()
        for replica in node.replicas.values():
            if replica.leaving != drain:
                replica.leaving = drain
                affected.add(replica.app_key)
        if not cordoned and node.usable and not was_usable_for_new:
            affected |= set(self.pending)
        return affected

    # -- apps ---------------------------------------------------------------------------

    def set_app(self, key: AppKey, state: AppState | None) -> None:
        rec = self.apps.get(key)
        if rec is None:
            if state is None:
                return
            rec = self.apps[key] = AppRecord(key)
        rec.state = state
        if state is not None and state.spec.placement.regions is not None:
            self.regional_apps.add(key)
        else:
            self.regional_apps.discard(key)
        if state is not None:
            rec.seen = True
            self._set_spread(rec, state.spec.placement.spread_label)

    def set_ready(self, key: AppKey, ready: set[str] | None) -> bool:
        """The health monitor's ready replicas of an app; True if a decision waits on it
        (a drain, or replicas on an unreachable node)."""
        rec = self.apps.get(key)
        if rec is None:
            return False
        rec.ready = ready
        return self.waiting_for_ready(key)

    # -- reconcile ----------------------------------------------------------------------

    def reconcile(self, key: AppKey, now: float = 0.0) -> Outcome:
        out = Outcome(key)
        rec = self.apps.get(key)
        if rec is None:
            return out
        state = rec.state
        if state is None:
            if rec.replicas and not rec.seen and now < self.orphans_after:
                out.requeue = self.orphans_after - now
                return out
            for replica in list(rec.replicas.values()):
                self._unbind(replica)
                out.removed.append(replica)
            del self.apps[key]
            self.regional_apps.discard(key)
            self.pending.pop(key, None)
            self.held.pop(key, None)
            prefix = f"{key}@"
            for sk in [sk for sk in self._specs if sk.startswith(prefix)]:
                del self._specs[sk]
            out.deleted = True
            out.freed = bool(out.removed)
            return out

        # 0. replicas on unreachable nodes that health does not find ready: nobody is
        # there to restart them, so they are replaced (without any health record for the
        # app nothing is known: they wait for the node's lost grace)
        if rec.ready is not None:
            for replica in list(rec.replicas.values()):
                if self.nodes[replica.node].unreachable and replica.id not in rec.ready:
                    self._unbind(replica)
                    out.removed.append(replica)

        versions = versions_of(state)
        by_rev: dict[int, list[Replica]] = defaultdict(list)
        for replica in rec.replicas.values():
            by_rev[replica.revision].append(replica)

        # 2. revisions no longer wanted
        for rev in [rev for rev in by_rev if rev not in versions]:
            for replica in by_rev.pop(rev):
                self._unbind(replica)
                out.removed.append(replica)

        # 3. scale down
        for rev, version in versions.items():
            active = [r for r in by_rev.get(rev, ()) if not r.leaving]
            extra = len(active) - version.replicas
            if extra > 0:
                victims = removal_order(
                    active, self.nodes, extra, spread_by=rec.spread_by, domains=rec.domains
                )
                for replica in victims:
                    self._unbind(replica)
                    by_rev[rev].remove(replica)
                    out.removed.append(replica)

        # 4. scale up, newest revision first; an app not started waits for its dependencies
        waits = waiting_for(state.spec, any(by_rev.values()), self._dependencies(key, state.spec))
        if waits:
            self.held[key] = held_message(waits)
        else:
            self.held.pop(key, None)
        for rev in sorted(versions, reverse=True) if not waits else ():
            version = versions[rev]
            active_count = sum(1 for r in by_rev.get(rev, ()) if not r.leaving)
            missing = version.replicas - active_count
            if missing > 0:
                placed = self._place(rec, version, missing)
                by_rev[rev].extend(placed)
                out.placed.extend(placed)
                if len(placed) < missing:
                    demand = self._demand(rec, version)
                    total, reasons = explain(self.nodes.values(), demand)
                    out.unplaceable.append(Unplaceable(rev, missing - len(placed), total, reasons))

        # 4b. a reachable region short of the app's minimum, all replicas placed: move one
        if not waits and not out.unplaceable:
            self._move_to_short_region(rec, versions, by_rev, out)

        # 5. leaving replicas whose replacements are ready
        for rev, replicas in by_rev.items():
            leaving = [r for r in replicas if r.leaving]
            if not leaving:
                continue
            desired = versions[rev].replicas
            ready = rec.ready
            if ready is None:
                drop = leaving
            else:
                ready_count = sum(1 for r in replicas if r.id in ready)
                drop = []
                for replica in sorted(leaving, key=lambda r: (r.id in ready, r.id)):
                    if replica.id not in ready:
                        drop.append(replica)
                    elif ready_count - 1 >= desired:
                        drop.append(replica)
                        ready_count -= 1
            for replica in drop:
                self._unbind(replica)
                out.removed.append(replica)

        self.move_targets.pop(key, None)  # a target not usable now: placed as usual
        if out.unplaceable:
            self.pending[key] = out.unplaceable
        else:
            self.pending.pop(key, None)
        out.freed = bool(out.removed)
        return out

    def waiting_for_ready(self, key: AppKey) -> bool:
        """Whether a decision about the app depends on health: a leaving replica, or one
        on an unreachable node."""
        rec = self.apps.get(key)
        if rec is None:
            return False
        nodes = self.nodes
        return any(r.leaving or nodes[r.node].unreachable for r in rec.replicas.values())

    # -- rebuilding from retained assignments -------------------------------------------

    def load(self, assignment: NodeAssignment, seen: float) -> None:
        """Adopt a node's current assignment (at start or on taking over leadership)."""
        node = self.nodes.get(assignment.node)
        if node is None:
            node = NodeView(id=assignment.node, status=UNKNOWN, seen=seen)
            node.cordoned = assignment.node in self.cordons
            node.draining = self.cordons.get(assignment.node, False)
            self.nodes[assignment.node] = node
            self._invalidate()
        node.generation = max(node.generation, assignment.generation)
        for item in assignment.replicas:
            spec = assignment.specs.get(item.spec_key)
            if spec is None or item.id in self.replicas:
                self.dirty.add(assignment.node)  # inconsistent: rewrite it
                continue
            self._specs.setdefault(item.spec_key, spec)
            key = AppKey(item.namespace, item.app)
            rec = self.apps.get(key)
            if rec is None:
                rec = self.apps[key] = AppRecord(key)
            replica = Replica(
                id=item.id,
                app_key=rec.key,
                revision=item.revision,
                node=assignment.node,
                cpu=spec.resources.cpu,
                memory=spec.resources.memory,
                leaving=node.draining,
            )
            self._bind(replica, mark=False)

    # -- output -------------------------------------------------------------------------

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def assignment(self, node_id: str) -> NodeAssignment:
        """The node's whole assignment as a message; bumps its generation."""
        node = self.nodes.get(node_id)
        if node is None:
            return NodeAssignment(node=node_id)
        node.generation += 1
        replicas: list[AssignedReplica] = []
        specs: dict[str, AppSpec] = {}
        for replica in sorted(node.replicas.values(), key=lambda r: r.id):
            sk = spec_key(replica.namespace, replica.app, replica.revision)
            if sk not in specs:
                spec = self.spec_for(replica)
                if spec is None:
                    continue
                specs[sk] = spec
            replicas.append(
                AssignedReplica(
                    id=replica.id,
                    namespace=replica.namespace,
                    app=replica.app,
                    revision=replica.revision,
                )
            )
        return NodeAssignment(
            node=node_id, replicas=replicas, specs=specs, generation=node.generation
        )

    def spec_for(self, replica: Replica) -> AppSpec | None:
        rec = self.apps.get(replica.app_key)
        if rec is not None and rec.state is not None:
            for version in rec.state.versions:
                if version.revision == replica.revision:
                    return version.spec
            if rec.state.revision == replica.revision:
                return rec.state.spec
        return self._specs.get(spec_key(replica.namespace, replica.app, replica.revision))

    def status(self, key: AppKey, ts: float = 0.0) -> SchedulerStatus | None:
        """The app's placement status, or None once the app is gone."""
        rec = self.apps.get(key)
        if rec is None or rec.state is None:
            return None
        state = rec.state
        desired = sum(v.replicas for v in versions_of(state).values())
        placed = sum(1 for r in rec.replicas.values() if not r.leaving)
        leaving = len(rec.replicas) - placed
        problems = self.pending.get(key, [])
        reasons: dict[str, int] = {}
        for problem in problems:
            for reason, n in problem.reasons.items():
                reasons[reason] = max(reasons.get(reason, 0), n)
        message = "; ".join(
            f"revision {p.revision}: {p.message}" if len(problems) > 1 else p.message
            for p in problems
        )
        if not message and leaving:
            message = (
                f"{leaving} replica(s) leaving (drained, rebalanced or moved to their region) "
                "once replacements are ready"
            )
        if not message and key in self.held:
            message = self.held[key]
        nodes: dict[str, int] = defaultdict(int)
        for replica in rec.replicas.values():
            nodes[replica.node] += 1
        return SchedulerStatus(
            namespace=state.namespace,
            name=state.name,
            desired=desired,
            placed=placed,
            unplaceable=sum(p.count for p in problems),
            leaving=leaving,
            message=message,
            reasons=reasons,
            nodes=dict(sorted(nodes.items())),
            ts=ts,
            waiting_for=self.held.get(key, ""),
        )

    def dependants(self, key: AppKey) -> set[AppKey]:
        """The held apps that wait for ``key`` (to reconcile when it changes)."""
        return {
            held
            for held in self.held
            if held.namespace == key.namespace
            and (rec := self.apps.get(held)) is not None
            and rec.state is not None
            and any(d.app == key.name for d in rec.state.spec.depends_on)
        }

    # -- internals ----------------------------------------------------------------------

    def _dependencies(self, key: AppKey, spec: AppSpec) -> dict[str, DependencyState]:
        """The state of each app ``spec`` depends on that exists (``depends.waiting_for``)."""
        out: dict[str, DependencyState] = {}
        for dependency in spec.depends_on:
            rec = self.apps.get(AppKey(key.namespace, dependency.app))
            if rec is None or rec.state is None:
                continue
            revision = rec.state.revision
            version = versions_of(rec.state).get(revision)
            current = [r for r in rec.replicas.values() if r.revision == revision]
            ready = rec.ready or set()
            out[dependency.app] = DependencyState(
                desired=version.replicas if version is not None else rec.state.replicas,
                placed=sum(1 for r in current if not r.leaving),
                ready=sum(1 for r in current if r.id in ready),
            )
        return out

    def _invalidate(self) -> None:
        self._order = None
        self._rings.clear()

    def _ring(self, constraints: Constraints) -> NodeRing:
        ring = self._rings.get(constraints)
        if ring is not None:
            return ring
        if self._order is None:
            order = sorted(self.nodes.values(), key=lambda n: n.id)
            random.Random(self.seed).shuffle(order)
            self._order = order
        if constraints:
            probe = Demand(
                app=AppKey("", ""), revision=0, cpu=0.0, memory=0, constraints=constraints
            )
            nodes = [n for n in self._order if check_constraints(n, probe) is None]
        else:
            nodes = list(self._order)
        ring = self._rings[constraints] = NodeRing(nodes)
        return ring

    def _demand(self, rec: AppRecord, version: AppVersion) -> Demand:
        spec = version.spec
        placement = spec.placement
        return Demand(
            app=rec.key,
            revision=version.revision,
            cpu=spec.resources.cpu,
            memory=spec.resources.memory,
            constraints=constraints_of(spec),
            max_per_node=placement.max_per_node,
            spread_by=rec.spread_by,
            strategy=placement.strategy,
            domains=rec.domains,
        )

    def _move_to_short_region(
        self,
        rec: AppRecord,
        versions: Mapping[int, AppVersion],
        by_rev: Mapping[int, list[Replica]],
        out: Outcome,
    ) -> None:
        """``regions.py``: place one replica of the newest revision in a reachable region
        short of its minimum and mark one of the fullest region leaving (dropped in step 5
        once the new one is ready). Nothing while a move (or a drain) is under way."""
        rev = max(versions)
        regions = versions[rev].spec.placement.regions
        if regions is None or any(r.leaving for r in rec.replicas.values()):
            return
        current = by_rev.get(rev, [])
        counts = region_counts(current, self.nodes)
        constraints = constraints_of(versions[rev].spec)
        reachable = reachable_regions(self._ring(constraints).nodes)
        short = short_regions(counts, reachable, regions.min_per_region)
        if not short or surplus_victim(current, self.nodes, counts, regions.min_per_region) is None:
            return
        placed = self._place(rec, versions[rev], 1, only=short)
        if not placed:
            return
        victim = surplus_victim(current, self.nodes, counts, regions.min_per_region)
        assert victim is not None
        victim.leaving = True
        self.dirty.add(victim.node)
        by_rev[rev].extend(placed)
        out.placed.extend(placed)

    def _place(
        self,
        rec: AppRecord,
        version: AppVersion,
        count: int,
        only: frozenset[str] | None = None,
    ) -> list[Replica]:
        """Place up to ``count`` replicas; with ``placement.regions``, each in a reachable
        region short of its minimum when one fits (``only``: in those regions or nowhere)."""
        demand = self._demand(rec, version)
        ring = self._ring(demand.constraints)
        score = fused(demand.strategy, demand.spread_by)
        limit = candidate_limit(len(ring.nodes), self.candidates)
        namespace, name = rec.key
        self._specs.setdefault(spec_key(namespace, name, version.revision), version.spec)
        regions = version.spec.placement.regions
        counts = reachable = None
        if regions is not None:
            same = [r for r in rec.replicas.values() if r.revision == version.revision]
            counts = region_counts(same, self.nodes)
            reachable = reachable_regions(ring.nodes)
        placed: list[Replica] = []
        targets = self.move_targets.get(rec.key)
        for _ in range(count):
            node = self._move_target(targets, demand) if targets else None
            if (
                node is None
                and regions is not None
                and counts is not None
                and reachable is not None
            ):
                short = only or short_regions(counts, reachable, regions.min_per_region)
                if short:
                    sub = self._ring(with_regions(demand.constraints, short))
                    node = select(
                        sub, demand, score, candidate_limit(len(sub.nodes), self.candidates)
                    )
                if node is None and only is not None:
                    break
            if node is None:
                node = select(ring, demand, score, limit)
            if node is None:
                break
            if counts is not None and (region := node.labels.get(REGION_LABEL)) is not None:
                counts[region] += 1
            replica = Replica(
                id=self._new_id(namespace, name),
                app_key=rec.key,
                revision=version.revision,
                node=node.id,
                cpu=demand.cpu,
                memory=demand.memory,
            )
            self._bind(replica)
            placed.append(replica)
        return placed

    def _move_target(self, targets: list[str], demand: Demand) -> NodeView | None:
        """The next target of a rebalance move that can still take the replica."""
        while targets:
            node = self.nodes.get(targets.pop(0))
            if node is not None and first_failure(node, demand) is None:
                return node
        return None

    # -- rebalancing --------------------------------------------------------------------

    def rebalance_plan(self, max_moves: int, tolerance: float = 0.1) -> list[Move]:
        """Moves that even out the nodes (``rebalance.plan_moves``), not carried out."""
        demands: dict[tuple[AppKey, int], Demand] = {}
        for key, rec in self.apps.items():
            if rec.state is None:
                continue
            for rev, version in versions_of(rec.state).items():
                demands[(key, rev)] = self._demand(rec, version)
        return plan_moves(self.nodes.values(), demands, max_moves, tolerance)

    def move(self, moves: Iterable[Move]) -> set[AppKey]:
        """Carry moves out as a drain does: each replica is marked leaving and its
        replacement goes to the move's target (when it still fits) at the app's next
        reconcile; the leaving one stops once the app is ready without it. Returns the
        apps to reconcile."""
        touched: set[AppKey] = set()
        for m in moves:
            replica = self.replicas.get(m.replica)
            if replica is None or replica.leaving or replica.node != m.source:
                continue  # the plan is stale for this one
            replica.leaving = True
            self.move_targets.setdefault(replica.app_key, []).append(m.target)
            touched.add(replica.app_key)
        return touched

    def _new_id(self, namespace: str, name: str) -> str:
        while True:
            rid = f"{namespace}.{name}.{self._ids.getrandbits(32):08x}"
            if rid not in self.replicas:
                return rid

    def _set_spread(self, rec: AppRecord, spread_by: str | None) -> None:
        if spread_by == rec.spread_by:
            return
        rec.spread_by = spread_by
        rec.domains = {}
        if spread_by is None:
            return
        for replica in rec.replicas.values():
            node = self.nodes.get(replica.node)
            domain = node.labels.get(spread_by) if node is not None else None
            if domain is not None:
                rec.domains[domain] = rec.domains.get(domain, 0) + 1

    def _bind(self, replica: Replica, mark: bool = True) -> None:
        node = self.nodes[replica.node]
        rec = self.apps[replica.app_key]
        self.replicas[replica.id] = replica
        node.replicas[replica.id] = replica
        node.apps[rec.key] = node.apps.get(rec.key, 0) + 1
        node.cpu_used += replica.cpu
        node.mem_used += replica.memory
        rec.replicas[replica.id] = replica
        if rec.spread_by is not None:
            domain = node.labels.get(rec.spread_by)
            if domain is not None:
                rec.domains[domain] = rec.domains.get(domain, 0) + 1
        if mark:
            self.dirty.add(node.id)

    def _unbind(self, replica: Replica) -> None:
        node = self.nodes[replica.node]
        key = replica.app_key
        self.replicas.pop(replica.id, None)
        node.replicas.pop(replica.id, None)
        left = node.apps.get(key, 0) - 1
        if left > 0:
            node.apps[key] = left
        else:
            node.apps.pop(key, None)
        node.cpu_used = max(0.0, node.cpu_used - replica.cpu) if node.replicas else 0.0
        node.mem_used = max(0, node.mem_used - replica.memory) if node.replicas else 0
        rec = self.apps.get(key)
        if rec is not None:
            rec.replicas.pop(replica.id, None)
            if rec.spread_by is not None:
                domain = node.labels.get(rec.spread_by)
                if domain is not None and rec.domains.get(domain, 0) > 0:
                    rec.domains[domain] -= 1
        self.dirty.add(node.id)


@dataclass(frozen=True, slots=True)
class Plan:
    """The result of ``plan``: new assignments of the nodes that changed, and problems."""

    assignments: dict[str, NodeAssignment]
    unplaceable: dict[AppKey, list[Unplaceable]]

    def messages(self) -> dict[AppKey, str]:
        """App -> human-readable reason, for every app not fully placed."""
        return {
            key: "; ".join(p.message for p in problems)
            for key, problems in self.unplaceable.items()
        }


def plan(
    apps: Iterable[AppState],
    nodes: Iterable[NodeInfo],
    current: Iterable[NodeAssignment] = (),
    *,
    cordons: Mapping[str, bool] | None = None,
    ready: Mapping[AppKey, set[str]] | None = None,
    now: float | None = None,
    grace: float = 6.0,
    lost_grace: float = LOST_GRACE,
    seed: int = 0,
    candidates: int | None = None,
    ids_seed: int | None = None,
) -> Plan:
    """Place every app on the nodes, starting from the current assignments.

    ``cordons`` maps node -> drain flag; ``ready`` maps app -> ready replica ids.
    With ``now``, a node whose ``heartbeat`` is older than ``grace`` is unreachable (its
    replicas not in ``ready`` move) and one older than ``lost_grace`` lost.
    Returns the assignment of every node whose set changed.
    """
    cluster = Cluster(seed=seed, candidates=candidates, ids_seed=ids_seed, lost_grace=lost_grace)
    for node_id, drain in (cordons or {}).items():
        cluster.set_cordon(node_id, True, drain)
    for assignment in current:
        cluster.load(assignment, seen=0.0)
    infos = list(nodes)
    for info in infos:
        cluster.upsert_node(info, seen=info.heartbeat)
    if now is not None:
        cluster.expire(now, grace)
    else:
        for node in cluster.nodes.values():
            if node.status == UNKNOWN and not node.lost:
                cluster.lose_node(node.id)
    for state in apps:
        cluster.set_app(state.key, state)
    for key, ids in (ready or {}).items():
        cluster.set_ready(key, ids)
    for key in sorted(cluster.apps):
        cluster.reconcile(key, now or 0.0)
    return Plan(
        assignments={n: cluster.assignment(n) for n in sorted(cluster.take_dirty())},
        unplaceable=dict(cluster.pending),
    )
