"""The mesh's routing table, a pure function of the bus: apps, health and node replicas.

For every app: its spec (ports, allow rule) and, per declared port name, the endpoints of
its ready replicas on whichever node they run (``ReplicaStatus.endpoints`` of the node's
report, for replicas that ``health/<ns>/<app>`` lists ready and not terminating, and that
their node reports ``running``). A replica leaves the table the moment health says it is
not ready or is draining, or its agent reports it exited, so no new connection is sent to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.keys import AppKey
from core.mesh import NodeNetwork, allocate_vips, may_reach, resolve_name
from core.spec import AppSpec
from core.state import AppHealth, AppState, NodeReplicas

#: Answer of ``lookup`` for a name that is not the cluster's: forward it upstream.
FORWARD = None


@dataclass(frozen=True, slots=True)
class Backends:
    spec: AppSpec
    #: port name -> "host:port" of every ready replica, in a stable order.
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def build_table(
    apps: Mapping[AppKey, AppState],
    health: Mapping[AppKey, AppHealth],
    reports: Iterable[NodeReplicas],
) -> dict[AppKey, Backends]:
    endpoints_of: dict[str, Mapping[str, str]] = {}
    for report in reports:
        for status in report.replicas:
            # The agent reports an exit within ~20 ms of Docker's event, often before the
            # next readiness probe: a replica not running is no backend, whatever health says.
            if status.phase == "running":
                endpoints_of[status.id] = status.endpoints
    table: dict[AppKey, Backends] = {}
    for key, app in apps.items():
        ready = health.get(key)
        per_port: dict[str, list[str]] = {name: [] for name in app.spec.ports}
        for replica in ready.ready if ready is not None else []:
            known = endpoints_of.get(replica.id, {})
            for name in per_port:
                endpoint = known.get(name)
                if endpoint:
                    per_port[name].append(endpoint)
        table[key] = Backends(app.spec, {n: tuple(sorted(e)) for n, e in per_port.items()})
    return table


@dataclass(frozen=True, slots=True)
class Listener:
    """One relay socket: ``vip:port`` on a node network, for one port of one app."""

    vip: ipaddress.IPv4Address
    port: int
    app: AppKey
    port_name: str


def plan_vips(
    apps: Iterable[AppKey],
    networks: Mapping[str, NodeNetwork],
    previous: Mapping[AppKey, ipaddress.IPv4Address],
) -> dict[AppKey, ipaddress.IPv4Address]:
    """One VIP per app on this node, from its namespace network's range (sticky)."""
    by_ns: dict[str, list[str]] = {}
    for key in apps:
        by_ns.setdefault(key.namespace, []).append(key.name)
    out: dict[AppKey, ipaddress.IPv4Address] = {}
    for ns, names in by_ns.items():
        network = networks.get(ns)
        if network is None:
            continue
        before = {k.name: ip for k, ip in previous.items() if k.namespace == ns}
        for name, ip in allocate_vips(names, network.subnet, before).items():
            out[AppKey(ns, name)] = ip
    return out


def plan_listeners(
    apps: Mapping[AppKey, AppState], vips: Mapping[AppKey, ipaddress.IPv4Address]
) -> dict[tuple[ipaddress.IPv4Address, int], Listener]:
    out: dict[tuple[ipaddress.IPv4Address, int], Listener] = {}
    for key, vip in vips.items():
        app = apps.get(key)
        if app is None:
            continue
        for name, port in app.spec.ports.items():
            out[(vip, port)] = Listener(vip, port, key, name)
    return out


def source_namespace(peer: str, networks: Iterable[NodeNetwork]) -> str | None:
    """The namespace of the container at ``peer`` (an address of one of this node's
    networks), or None for anything else (refused)."""
    for network in networks:
        if network.holds(peer):
            return network.namespace
    return None


def by_alias(apps: Mapping[AppKey, AppState], key: AppKey) -> AppState | None:
    """The app of ``key.namespace`` that has ``key.name`` among its ``network.aliases``
    (the first by name when several claim it, so every node answers alike)."""
    for candidate_key in sorted(k for k in apps if k.namespace == key.namespace):
        app = apps[candidate_key]
        if key.name in app.spec.network.aliases:
            return app
    return None


def lookup(
    qname: str,
    querier: str,
    apps: Mapping[AppKey, AppState],
    vips: Mapping[AppKey, ipaddress.IPv4Address],
    domain: str,
) -> list[ipaddress.IPv4Address] | None:
    """A DNS question from a container of namespace ``querier``: the app's VIP, ``[]`` for
    a cluster name that does not exist or that the querier may not reach (a name error),
    ``FORWARD`` (None) for a name that is not the cluster's."""
    key = resolve_name(qname, querier)
    ours = qname.lower().rstrip(".").endswith("." + domain)
    app = apps.get(key) if key is not None else None
    if app is None and key is not None:
        app = by_alias(apps, key)
    if app is None:
        return [] if ours else FORWARD
    if not may_reach(querier, app.spec):
        return []
    vip = vips.get(app.key)
    return [vip] if vip is not None else []
