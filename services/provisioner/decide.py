"""What the provisioner does next: a pure function of demand, nodes, limits, history and now.

``decide(pending, nodes, sizes, limits, history, now)`` returns a ``Plan``: the actions to
take (each with its reason, which becomes the event) and the history to keep. Nothing here
reads a clock or talks to the bus; the service passes ``now`` in.

Scale up (as the Kubernetes cluster autoscaler does, one node group of several sizes):

- *pending* demand is what the scheduler could not place (``status/scheduler`` counts
  unplaceable replicas); only demand a new node could take counts: its constraints are met
  by the labels provisioned nodes get, and one replica fits in the largest size;
- while a node asked for has not joined yet (``joining``), nothing more is asked for: the
  scheduler places onto it first (a provision that never joins is given up after
  ``join_timeout``, and the service deletes it);
- the size asked for is the cheapest that holds all the pending demand, else the one that
  holds the most (cheapest first among equals), within the hourly budget;
- never more than ``max_nodes`` nodes (joined and joining), never within ``up_cooldown`` of
  the last scale-up.

Scale down (only nodes the provider made, ``owned``):

- a node is *low* while its requests are below ``low_utilization`` of its capacity (both
  CPU and memory; an empty node is low); one that stayed low for ``low_for`` is drained
  (the scheduler moves its replicas, each replacement ready before the old one stops) if
  what it runs fits on the other nodes, then removed once its assignment is empty;
- one node at a time, never below ``min_nodes``, never while demand is pending or a node is
  joining, never within ``down_cooldown`` of the last scale-up or scale-down;
- a drained node is removed once its assignment is empty and its agent reports no
  container left (the ones it stops included): the drain was the decision.

Rebalance (``limits.rebalance``): ``rebalance_after`` seconds after a node joined, once no
demand is pending and no node is joining or draining, the scheduler is asked to move
replicas onto the emptier nodes (``shoal rebalance``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from core.units import format_memory

#: tolerance for float sums of cpu requests
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Size:
    """A node size the provider offers: its capacity and its price per hour."""

    name: str
    cpu: float
    memory: int
    price: float = 0.0

    def describe(self) -> str:
        return f"{self.name} ({self.cpu:g} cpu, {format_memory(self.memory)}, {self.price:g}/h)"


@dataclass(frozen=True, slots=True)
class Pending:
    """Replicas of one app the scheduler could not place, and why."""

    app: str
    count: int
    cpu: float
    memory: int
    max_per_node: int | None = None
    constraints: tuple[tuple[str, tuple[str, ...]], ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Load:
    """One replica's requests on a node (what consolidation must fit elsewhere)."""

    app: str
    cpu: float
    memory: int
    max_per_node: int | None = None
    constraints: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class NodeUse:
    """A node as the provisioner sees it: capacity, what is assigned, whose it is."""

    id: str
    cpu: float
    memory: int
    loads: tuple[Load, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    ready: bool = True
    cordoned: bool = False
    draining: bool = False
    owned: bool = False
    price: float = 0.0
    running: int = 0  # containers its agent still reports (stopping ones included)

    @property
    def cpu_used(self) -> float:
        return sum(load.cpu for load in self.loads)

    @property
    def memory_used(self) -> int:
        return sum(load.memory for load in self.loads)

    def utilization(self) -> float:
        """The larger of the CPU and memory request ratios (0 when empty)."""
        cpu = self.cpu_used / self.cpu if self.cpu > 0 else 0.0
        memory = self.memory_used / self.memory if self.memory > 0 else 0.0
        return max(cpu, memory)


@dataclass(frozen=True, slots=True)
class Joining:
    """A node asked of the provider that has not reported ready yet."""

    id: str
    size: str
    price: float
    since: float


@dataclass(frozen=True, slots=True)
class Limits:
    min_nodes: int = 0
    max_nodes: int = 10
    budget: float | None = None  # per hour, over the nodes the provider made
    up_cooldown: float = 10.0
    down_cooldown: float = 60.0
    low_for: float = 60.0
    low_utilization: float = 0.5
    consolidate: bool = True  # drain under-used nodes that are not empty
    join_timeout: float = 300.0
    rebalance: bool = False  # after nodes join, ask the scheduler to even out the nodes
    rebalance_after: float = 5.0  # how long after a node joined (its pending replicas placed)
    labels: tuple[tuple[str, str], ...] = ()  # what every provisioned node is labelled


@dataclass(frozen=True, slots=True)
class History:
    last_up: float | None = None
    last_down: float | None = None
    low_since: tuple[tuple[str, float], ...] = ()
    ready_nodes: tuple[str, ...] | None = None  # None before the first pass
    rebalance_at: float | None = None
    rebalance_why: str = ""


@dataclass(frozen=True, slots=True)
class Provision:
    size: Size
    reason: str
    kind: str = "provision"


@dataclass(frozen=True, slots=True)
class Drain:
    node: str
    reason: str
    kind: str = "drain"


@dataclass(frozen=True, slots=True)
class Remove:
    node: str
    reason: str
    kind: str = "remove"


@dataclass(frozen=True, slots=True)
class GiveUp:
    """A node asked for that never joined: delete it."""

    node: str
    reason: str
    kind: str = "give_up"


@dataclass(frozen=True, slots=True)
class Rebalance:
    """Ask the scheduler to move replicas onto the nodes that joined."""

    reason: str
    kind: str = "rebalance"


@dataclass(frozen=True, slots=True)
class Hold:
    """Something should be done but a limit forbids it (reported, not acted on)."""

    reason: str
    kind: str = "hold"


Action = Provision | Drain | Remove | GiveUp | Rebalance | Hold


@dataclass(frozen=True, slots=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    history: History = field(default_factory=History)


def _labels_meet(
    labels: dict[str, str], constraints: tuple[tuple[str, tuple[str, ...]], ...]
) -> bool:
    return all(labels.get(key) in allowed for key, allowed in constraints)


def helpable(pending: list[Pending], sizes: list[Size], limits: Limits) -> list[Pending]:
    """The pending demand a new node could take (constraints met, one replica fits)."""
    labels = dict(limits.labels)
    biggest_cpu = max((s.cpu for s in sizes), default=0.0)
    biggest_memory = max((s.memory for s in sizes), default=0)
    return [
        p
        for p in pending
        if p.count > 0
        and _labels_meet(labels, p.constraints)
        and p.cpu <= biggest_cpu + EPSILON
        and p.memory <= biggest_memory
    ]


def holds(size: Size, pending: list[Pending]) -> int:
    """How many of the pending replicas one empty node of ``size`` takes (largest first)."""
    cpu, memory, taken = size.cpu, size.memory, 0
    for p in sorted(pending, key=lambda p: (-p.memory, -p.cpu, p.app)):
        room = p.count if p.max_per_node is None else min(p.count, p.max_per_node)
        for _ in range(room):
            if p.cpu > cpu + EPSILON or p.memory > memory:
                break
            cpu -= p.cpu
            memory -= p.memory
            taken += 1
    return taken


def choose_size(
    sizes: list[Size], pending: list[Pending], spend_left: float | None
) -> tuple[Size | None, str]:
    """The size to ask for, or None and why not."""
    total = sum(p.count for p in pending)
    affordable = [s for s in sizes if spend_left is None or s.price <= spend_left + EPSILON]
    if not affordable:
        cheapest = min(sizes, key=lambda s: s.price)
        return (
            None,
            f"the budget has {spend_left or 0:g}/h left; "
            f"the cheapest size costs {cheapest.price:g}/h",
        )
    ranked = sorted(affordable, key=lambda s: (s.price, s.cpu, s.memory, s.name))
    for size in ranked:
        if holds(size, pending) >= total:
            return size, ""
    best = max(ranked, key=lambda s: (holds(s, pending), -s.price))
    if holds(best, pending) == 0:
        return None, "no affordable size holds one pending replica"
    return best, ""


def _pending_text(pending: list[Pending]) -> str:
    parts = [f"{p.count} of {p.app}" + (f" ({p.reason})" if p.reason else "") for p in pending]
    return (
        "unplaceable: "
        + "; ".join(parts[:5])
        + (f"; +{len(parts) - 5} apps" if len(parts) > 5 else "")
    )


@dataclass(slots=True)
class _Room:
    cpu: float
    memory: int
    labels: dict[str, str]
    apps: dict[str, int]


def _fits_elsewhere(node: NodeUse, others: list[NodeUse]) -> bool:
    """Whether every replica of ``node`` fits on ``others`` (first fit, largest first)."""
    rooms = [
        _Room(o.cpu - o.cpu_used, o.memory - o.memory_used, dict(o.labels), _app_counts(o))
        for o in others
    ]
    for load in sorted(node.loads, key=lambda x: (-x.memory, -x.cpu, x.app)):
        for room in rooms:
            if load.cpu > room.cpu + EPSILON or load.memory > room.memory:
                continue
            if not _labels_meet(room.labels, load.constraints):
                continue
            if load.max_per_node is not None and room.apps.get(load.app, 0) >= load.max_per_node:
                continue
            room.cpu -= load.cpu
            room.memory -= load.memory
            room.apps[load.app] = room.apps.get(load.app, 0) + 1
            break
        else:
            return False
    return True


def _app_counts(node: NodeUse) -> dict[str, int]:
    counts: dict[str, int] = {}
    for load in node.loads:
        counts[load.app] = counts.get(load.app, 0) + 1
    return counts


def decide(
    pending: list[Pending],
    nodes: list[NodeUse],
    joining: list[Joining],
    sizes: list[Size],
    limits: Limits,
    history: History,
    now: float,
) -> Plan:
    actions: list[Action] = []
    joined = {n.id for n in nodes if n.ready}
    still_joining: list[Joining] = []
    for j in joining:
        if j.id in joined:
            continue
        if now - j.since >= limits.join_timeout:
            actions.append(
                GiveUp(j.id, f"node {j.id} did not join within {limits.join_timeout:g}s")
            )
        else:
            still_joining.append(j)

    # nodes that joined since the last pass: a rebalance once they settled (if allowed)
    ready_ids = tuple(sorted(n.id for n in nodes if n.ready))
    if history.ready_nodes is not None and limits.rebalance:
        new = sorted(set(ready_ids) - set(history.ready_nodes))
        if new:
            history = replace(
                history,
                rebalance_at=now + limits.rebalance_after,
                rebalance_why=f"node(s) {', '.join(new)} joined",
            )
    history = replace(history, ready_nodes=ready_ids)

    # who has been low since when (only owned, ready nodes count)
    previous = dict(history.low_since)
    low_since: dict[str, float] = {}
    for n in nodes:
        if n.owned and n.ready and n.utilization() < limits.low_utilization:
            low_since[n.id] = previous.get(n.id, now)
    history = replace(history, low_since=tuple(sorted(low_since.items())))

    counted = len([n for n in nodes if n.ready or n.owned]) + len(still_joining)
    spend = sum(n.price for n in nodes if n.owned) + sum(j.price for j in still_joining)

    want = helpable(pending, sizes, limits)
    if want:
        if still_joining:
            return Plan(actions, history)  # the scheduler places onto the joining node first
        spend_left = None if limits.budget is None else limits.budget - spend
        size, why = choose_size(sizes, want, spend_left)
        if counted >= limits.max_nodes:
            also = f" (and {why})" if size is None else ""
            actions.append(
                Hold(f"{_pending_text(want)}; at the maximum of {limits.max_nodes} nodes{also}")
            )
            return Plan(actions, history)
        if history.last_up is not None and now - history.last_up < limits.up_cooldown:
            return Plan(actions, history)
        if size is None:
            actions.append(Hold(f"{_pending_text(want)}; {why}"))
            return Plan(actions, history)
        takes = holds(size, want)
        total = sum(p.count for p in want)
        actions.append(
            Provision(
                size,
                f"{_pending_text(want)}; a {size.describe()} node takes {takes} of {total}",
            )
        )
        return Plan(actions, replace(history, last_up=now))

    # -- scale down -------------------------------------------------------------------
    for n in nodes:
        if n.owned and n.draining and not n.loads and not n.running:
            actions.append(Remove(n.id, f"node {n.id} is drained and empty"))
    if any(isinstance(a, Remove) for a in actions):
        return Plan(actions, replace(history, last_down=now))
    if still_joining or any(n.owned and n.draining for n in nodes):
        return Plan(actions, history)  # one change at a time
    if history.rebalance_at is not None and now >= history.rebalance_at:
        actions.append(Rebalance(f"{history.rebalance_why}: even out the nodes"))
        return Plan(actions, replace(history, rebalance_at=None, rebalance_why=""))
    last = max((t for t in (history.last_up, history.last_down) if t is not None), default=None)
    if last is not None and now - last < limits.down_cooldown:
        return Plan(actions, history)
    live = [n for n in nodes if n.ready]
    if len(live) <= limits.min_nodes:
        return Plan(actions, history)
    candidates = [
        n
        for n in live
        if n.id in low_since
        and now - low_since[n.id] >= limits.low_for
        and not n.draining
        and (not n.loads or limits.consolidate)
    ]
    # the emptiest first, then the most expensive
    for n in sorted(candidates, key=lambda n: (len(n.loads), n.utilization(), -n.price, n.id)):
        others = [o for o in live if o.id != n.id and not o.cordoned and not o.draining]
        if n.loads and not _fits_elsewhere(n, others):
            continue
        what = (
            "empty"
            if not n.loads
            else f"{len(n.loads)} replica(s), {n.utilization():.0%} of its capacity requested"
        )
        reason = (
            f"node {n.id} under-used for {now - low_since[n.id]:g}s ({what}); "
            f"{len(live) - 1} nodes stay (minimum {limits.min_nodes})"
        )
        if n.loads:
            reason += "; its replicas fit on the others"
        actions.append(Drain(n.id, reason))
        return Plan(actions, replace(history, last_down=now))
    return Plan(actions, history)
