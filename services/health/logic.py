"""The health monitor's pure logic: what to probe, the probe state machine, and the
``AppHealth`` value that results. No I/O here: the service feeds probe results and the
current time in, and publishes what comes out.

Vocabulary:

- a *target* is one replica of one app, as observed by its agent, with the probes its
  revision declares and the endpoints they reach;
- a probe's *state* counts consecutive successes and failures; ``ok`` flips only when a
  threshold (``successes`` / ``failures``) is reached;
- an *offline* node is one whose agent is gone (its last will): the agent's absence says
  nothing about its containers, so its replicas are still probed directly, by endpoint;
  those without a probe health can run get a TCP ``REACHABILITY`` check instead;
- a *foreign* endpoint is one a report gives that is not on its node's advertised address
  (``nodes/<node>/info``): a forged report pointing elsewhere; such a replica is never a
  target, so it never gets traffic (nor does any replica while its node's address is
  unknown);
- an *unassigned* replica is one its node's assignment no longer lists: the scheduler
  replaced it (or is removing it), so it gets no traffic whatever its probes say;
- an *owner* is the health instance that probes an app: rendezvous hashing of the app key
  over the live instances, so each app is probed (and its ``health/`` topic written) by
  exactly one instance, and an instance's share moves to the others when it dies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.keys import AppKey
from core.probes import ProbeRole, ProbeState
from core.spec import AppSpec, Probe
from core.state import AppHealth, AppState, NodeReplicas, ReplicaHealth, ReplicaStatus

# -- targets ---------------------------------------------------------------------------

#: While a node's agent is offline nobody reports its containers, and health cannot run an
#: exec probe: a replica with no readiness probe, or an exec one, is checked by a TCP
#: connect to its route endpoint instead (fails in about a second once it is gone).
REACHABILITY = Probe(tcp="route", interval=0.5, timeout=1.0, failures=2, successes=1)


@dataclass(frozen=True, slots=True)
class Target:
    """One replica to watch: where traffic goes and what to probe."""

    replica: str
    namespace: str
    app: str
    revision: int
    node: str
    phase: str
    endpoint: str  # route port, "" when the agent reports none
    started_at: float | None
    readiness: Probe | None
    readiness_endpoint: str
    liveness: Probe | None
    liveness_endpoint: str
    exec_ready: bool | None = None
    leaving: bool = False  # its revision is no longer desired (rolled back, replaced)
    offline: bool = False  # its node's agent is offline: probed directly, by endpoint
    unassigned: bool = False  # its node's assignment no longer lists it
    hold: bool = False  # offline and nothing to check: the last verdict is kept
    endpoints: Mapping[str, str] = field(default_factory=dict)  # every published port

    def probe(self, role: ProbeRole) -> tuple[Probe | None, str]:
        if role == "readiness":
            return self.readiness, self.readiness_endpoint
        return self.liveness, self.liveness_endpoint


def spec_for(app: AppState, revision: int) -> AppSpec:
    for version in app.versions:
        if version.revision == revision:
            return version.spec
    return app.spec


def is_desired(app: AppState, revision: int) -> bool:
    """Whether replicas of ``revision`` should exist at all. A replica of any other revision
    (rolled back, or replaced by a finished rollout) is about to be removed; judging it by
    the current spec's probes could route traffic to a version the user just left."""
    return revision == app.revision or any(v.revision == revision for v in app.versions)


def _endpoint(spec: AppSpec, status: ReplicaStatus, ref: str | int | None) -> str:
    name = spec.port_name(ref)
    if name is not None and name in status.endpoints:
        return status.endpoints[name]
    number = spec.port_number(ref)
    if number is not None and str(number) in status.endpoints:
        return status.endpoints[str(number)]
    return ""


def endpoint_host(endpoint: str) -> str:
    """The host of ``host:port`` (``[v6]:port`` too)."""
    host = endpoint.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def foreign_endpoints(status: ReplicaStatus, address: str | None) -> list[str]:
    """The endpoints of ``status`` that are not on its node's advertised ``address``
    (every one while the address is unknown)."""
    return [e for e in status.endpoints.values() if address is None or endpoint_host(e) != address]


def targets_for(
    app: AppState,
    statuses: Iterable[ReplicaStatus],
    offline_nodes: Collection[str] = (),
    assigned: Mapping[str, Collection[str]] | None = None,
    addresses: Mapping[str, str] | None = None,
) -> list[Target]:
    """Every observed replica of ``app``, sorted by replica id.

    ``offline_nodes``: nodes whose agent is gone (last will). Their replicas stay, probed
    as usual; without a probe health can run (none, or exec) the route endpoint gets the
    ``REACHABILITY`` check, and without an endpoint the last verdict is kept (``hold``)
    until the scheduler's lost grace replaces them.
    ``assigned``: node -> replica ids its assignment lists (nodes missing: not known).
    A replica its node is no longer assigned is ``unassigned`` (out of rotation), and left
    out altogether when its node is offline too: it was replaced elsewhere.
    ``addresses``: node -> advertised address; a replica with a foreign endpoint is left
    out (None: not checked).
    """
    out: list[Target] = []
    for st in statuses:
        if st.namespace != app.namespace or st.app != app.name:
            continue
        if addresses is not None and foreign_endpoints(st, addresses.get(st.node)):
            continue
        offline = st.node in offline_nodes
        listed = assigned.get(st.node) if assigned is not None else None
        unassigned = listed is not None and st.id not in listed
        if unassigned and offline:
            continue
        spec = spec_for(app, st.revision)
        route_port = spec.route.port if spec.route is not None else None
        ready_p, live_p = spec.health.readiness, spec.health.liveness
        endpoint = _endpoint(spec, st, route_port)
        hold = False
        if offline and (ready_p is None or ready_p.kind == "exec"):
            ready_p = REACHABILITY if endpoint else None
            hold = not endpoint
        ready_endpoint = ""
        if ready_p is REACHABILITY:
            ready_endpoint = endpoint
        elif ready_p is not None:
            ready_endpoint = _endpoint(spec, st, ready_p.target_port)
        out.append(
            Target(
                replica=st.id,
                namespace=st.namespace,
                app=st.app,
                revision=st.revision,
                node=st.node,
                phase=st.phase,
                endpoint=endpoint,
                started_at=st.started_at,
                readiness=ready_p,
                readiness_endpoint=ready_endpoint,
                liveness=live_p,
                liveness_endpoint=_endpoint(spec, st, live_p.target_port) if live_p else "",
                exec_ready=st.exec_ready,
                leaving=not is_desired(app, st.revision),
                offline=offline,
                unassigned=unassigned,
                hold=hold,
                endpoints=dict(st.endpoints),
            )
        )
    out.sort(key=lambda t: t.replica)
    return out


class ReplicaIndex:
    """The replicas the agents report, by app; each node's report replaces its last one.

    A node's report removes only statuses it reported itself, so a replica id also found in
    another node's (stale) report keeps the status that came last.
    """

    def __init__(self) -> None:
        self._by_app: dict[AppKey, dict[str, ReplicaStatus]] = {}
        self._by_node: dict[str, list[ReplicaStatus]] = {}

    def update(self, node: str, report: NodeReplicas | None) -> set[AppKey]:
        """Fold in ``node``'s report (None: deleted); returns the apps whose statuses it
        changed (an agent sends its whole node's report when one replica changes)."""
        touched: set[AppKey] = set()
        now = {st.id for st in report.replicas} if report is not None else set()
        for st in self._by_node.pop(node, ()):
            if st.id in now:
                continue
            key = AppKey(st.namespace, st.app)
            bucket = self._by_app.get(key)
            if bucket is not None and st.id in bucket and bucket[st.id].node == node:
                del bucket[st.id]
                touched.add(key)
        if report is not None:
            self._by_node[node] = report.replicas
            for st in report.replicas:
                key = AppKey(st.namespace, st.app)
                bucket = self._by_app.setdefault(key, {})
                if bucket.get(st.id) != st:
                    bucket[st.id] = st
                    touched.add(key)
        for key in touched:
            if not self._by_app.get(key):
                self._by_app.pop(key, None)
        return touched

    def of(self, key: AppKey) -> Collection[ReplicaStatus]:
        """The statuses reported for one app."""
        return self._by_app.get(key, {}).values()

    def apps_on(self, node: str) -> set[AppKey]:
        """The apps with a replica in ``node``'s last report."""
        return {AppKey(st.namespace, st.app) for st in self._by_node.get(node, ())}

    def apps(self) -> set[AppKey]:
        return set(self._by_app)


def probes_to_run(target: Target) -> list[ProbeRole]:
    """The probes this monitor runs for a target: http/tcp ones on running replicas.

    Exec probes run inside the container, so the agent runs them (see core/README.md).
    """
    if target.phase != "running" or target.leaving or target.unassigned:
        return []
    roles: list[ProbeRole] = []
    all_roles: tuple[ProbeRole, ...] = ("readiness", "liveness")
    for role in all_roles:
        probe, endpoint = target.probe(role)
        if probe is not None and probe.kind != "exec" and endpoint:
            roles.append(role)
    return roles


# -- building AppHealth ----------------------------------------------------------------

StateKey = tuple[str, float | None, ProbeRole]


def replica_health(
    target: Target,
    states: Mapping[StateKey, ProbeState],
    previous: ReplicaHealth | None,
    now: float,
) -> ReplicaHealth:
    """The verdict for one replica; ``since`` is kept while ``ready`` does not change."""
    ready, reason = _readiness(target, states)
    if target.hold:
        kept = previous is not None and previous.started_at == target.started_at
        ready = kept and previous is not None and previous.ready and not previous.terminating
        reason = "node offline, nothing to probe: last verdict kept"
    live = True
    live_state = states.get((target.replica, target.started_at, "liveness"))
    if target.liveness is not None and live_state is not None and not live_state.ok:
        live = False
        reason = reason or f"liveness: {live_state.reason}"
    terminating = target.phase == "terminating" or target.leaving or target.unassigned
    if terminating:
        ready = False
        if target.phase == "terminating":
            reason = "terminating"
        elif target.leaving:
            reason = f"revision {target.revision} is no longer desired"
        else:
            reason = f"no longer assigned to node {target.node}"
    since = now
    if previous is not None and previous.ready == ready and previous.terminating == terminating:
        since = previous.since
    return ReplicaHealth(
        id=target.replica,
        revision=target.revision,
        node=target.node,
        endpoint=target.endpoint,
        endpoints=dict(target.endpoints),
        ready=ready,
        terminating=terminating,
        since=since,
        reason=reason,
        live=live,
        started_at=target.started_at,
    )


def _readiness(target: Target, states: Mapping[StateKey, ProbeState]) -> tuple[bool, str]:
    if target.phase != "running":
        return False, f"phase {target.phase}"
    if not target.endpoint:
        return False, "no endpoint published for the route port"
    probe = target.readiness
    if probe is None:
        return True, ""
    if probe.kind == "exec":
        if target.exec_ready is None:
            return False, "waiting for the agent's exec probe verdict"
        return target.exec_ready, "" if target.exec_ready else "exec probe failing"
    if not target.readiness_endpoint:
        return False, "no endpoint published for the probe port"
    state = states.get((target.replica, target.started_at, "readiness"))
    if state is None:
        return False, "not probed yet"
    if state.ok:
        return True, ""
    if probe is REACHABILITY:
        return False, f"node offline and endpoint unreachable: {state.reason}"
    return False, state.reason or "readiness probe failing"


def app_health(
    app: AppState,
    targets: Iterable[Target],
    states: Mapping[StateKey, ProbeState],
    previous: AppHealth | None,
    now: float,
) -> AppHealth:
    before = {r.id: r for r in previous.replicas} if previous is not None else {}
    replicas = [replica_health(t, states, before.get(t.replica), now) for t in targets]
    return AppHealth(namespace=app.namespace, name=app.name, replicas=replicas, ts=now)


def same_health(a: AppHealth | None, b: AppHealth | None) -> bool:
    """Equal apart from the publication time."""
    if a is None or b is None:
        return a is b
    return a.model_copy(update={"ts": 0.0}) == b.model_copy(update={"ts": 0.0})


@dataclass(frozen=True, slots=True)
class Transition:
    replica: str
    kind: Literal["ready", "unready", "terminating", "liveness_failed", "gone"]
    reason: str


def transitions(previous: AppHealth | None, current: AppHealth | None) -> list[Transition]:
    """What changed between two published values, for events."""
    before = {r.id: r for r in previous.replicas} if previous is not None else {}
    after = {r.id: r for r in current.replicas} if current is not None else {}
    out: list[Transition] = []
    for rid, now in after.items():
        was = before.get(rid)
        if now.terminating and (was is None or not was.terminating):
            out.append(Transition(rid, "terminating", now.reason))
        elif now.ready and (was is None or not was.ready):
            out.append(Transition(rid, "ready", now.reason))
        elif not now.ready and not now.terminating and was is not None and was.ready:
            out.append(Transition(rid, "unready", now.reason))
        if not now.live and (was is None or was.live):
            out.append(Transition(rid, "liveness_failed", now.reason))
    for rid in before.keys() - after.keys():
        out.append(Transition(rid, "gone", ""))
    return out


#: More transitions of one kind than this in one change are one event (an apply of 20,000
#: replicas is not 20,000 events); the first ``EVENT_IDS`` replica ids go in its data.
EVENT_BATCH = 5
EVENT_IDS = 50


@dataclass(frozen=True, slots=True)
class EventSpec:
    kind: str
    message: str
    replica: str | None
    severity: Literal["info", "warning"]
    data: dict[str, object]


def transition_events(changes: list[Transition]) -> list[EventSpec]:
    """The events of one change: one per replica, or one per kind when there are more than
    ``EVENT_BATCH`` of it (``data``: ``count`` and the first ``EVENT_IDS`` ``replicas``)."""
    by_kind: dict[str, list[Transition]] = {}
    for tr in changes:
        by_kind.setdefault(tr.kind, []).append(tr)
    out: list[EventSpec] = []
    for kind, group in by_kind.items():
        severity: Literal["info", "warning"] = (
            "info" if kind in ("ready", "terminating", "gone") else "warning"
        )
        words = kind.replace("_", " ")
        if len(group) <= EVENT_BATCH:
            out.extend(
                EventSpec(
                    f"replica_{kind}",
                    f"replica {tr.replica} {words}" + (f": {tr.reason}" if tr.reason else ""),
                    tr.replica,
                    severity,
                    {},
                )
                for tr in group
            )
            continue
        reasons = sorted({tr.reason for tr in group if tr.reason})
        out.append(
            EventSpec(
                f"replica_{kind}",
                f"{len(group)} replicas {words}"
                + (f": {'; '.join(reasons[:3])}" if reasons else ""),
                None,
                severity,
                {"count": len(group), "replicas": [tr.replica for tr in group[:EVENT_IDS]]},
            )
        )
    return out


def seeded_state(previous: AppHealth | None, target: Target, role: ProbeRole) -> bool | None:
    """A verdict another instance (or this one before a restart) already published for the
    same container start: a takeover continues from it instead of flapping to unready."""
    if previous is None:
        return None
    for r in previous.replicas:
        if r.id == target.replica and r.started_at == target.started_at:
            if role == "readiness":
                return r.ready if not r.terminating else None
            return r.live
    return None


# -- sharing the work ------------------------------------------------------------------


def owner(key: AppKey, instances: Iterable[str]) -> str | None:
    """Rendezvous (highest random weight) hashing: the instance that probes ``key``.

    The hash input is ``<instance>\0<ns>/<app>`` (``str(key)``): changing it would move
    every app to another owner during an upgrade. When an instance leaves, only its keys
    move; when one joins, it takes about 1/n.
    """
    best: tuple[bytes, str] | None = None
    for inst in instances:
        weight = hashlib.blake2b(f"{inst}\0{key!s}".encode(), digest_size=8).digest()
        if best is None or (weight, inst) > best:
            best = (weight, inst)
    return best[1] if best is not None else None


def http_success(status: int) -> bool:
    return 200 <= status < 400
