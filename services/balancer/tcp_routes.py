"""The TCP route table (pure): which app a listen port relays to, and its ready backends.

An app's ``tcp_routes`` each name a listen port of the balancer and a port of the app. The
backends of a route are the app's ready replicas that are not terminating (``AppHealth``),
at the endpoint their agent published for that port (``ReplicaHealth.endpoints``), so a
draining replica gets no new connection while the ones it has go on. A listen port belongs
to one app: the controller refuses a second one at apply; should two ever be seen anyway
(an old store), the app key that sorts first keeps it, on every balancer instance alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppHealth, AppState, ReplicaHealth
from services.balancer.routes import Backend


@dataclass(frozen=True, slots=True)
class TcpAppRoute:
    """One listen port of one app, as the balancer relays it."""

    key: AppKey
    listen: int
    algorithm: str
    backends: tuple[Backend, ...] = ()
    desired: int = 0


def replica_endpoint(spec: AppSpec, replica: ReplicaHealth, ref: str | int | None) -> str:
    """The ``host:port`` of ``replica`` for the app's port ``ref`` ("" when unpublished).

    Agents key endpoints by port name (or by number for a port without one); a health
    monitor older than ``endpoints`` sends only the route port's ``endpoint``."""
    if not replica.endpoints:
        return replica.endpoint if spec.port_name(ref) == spec.port_name(_http_port(spec)) else ""
    name = spec.port_name(ref)
    if name is not None and name in replica.endpoints:
        return replica.endpoints[name]
    number = spec.port_number(ref)
    if number is not None:
        return replica.endpoints.get(str(number), "")
    return ""


def _http_port(spec: AppSpec) -> str | int | None:
    return spec.route.port if spec.route is not None else None


def tcp_app_routes(app: AppState, health: AppHealth | None) -> list[TcpAppRoute]:
    """The TCP routes of one app (none when it declares none)."""
    spec = app.spec
    if not spec.tcp_routes:
        return []
    ready = sorted(health.ready, key=lambda r: r.id) if health is not None else []
    out: list[TcpAppRoute] = []
    for route in spec.tcp_routes:
        backends: list[Backend] = []
        for replica in ready:
            backend = Backend.make(
                replica.id, replica.revision, replica_endpoint(spec, replica, route.port)
            )
            if backend is not None:
                backends.append(backend)
        out.append(
            TcpAppRoute(
                key=AppKey(app.namespace, app.name),
                listen=route.listen,
                algorithm=route.algorithm,
                backends=tuple(backends),
                desired=app.replicas,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class TcpTable:
    """Listen port -> route; ``shadowed`` lists the routes that lost a port to another app."""

    by_port: Mapping[int, TcpAppRoute] = field(default_factory=dict)
    shadowed: tuple[TcpAppRoute, ...] = ()

    @classmethod
    def build(cls, routes: Iterable[TcpAppRoute]) -> TcpTable:
        by_port: dict[int, TcpAppRoute] = {}
        shadowed: list[TcpAppRoute] = []
        for route in sorted(routes, key=lambda r: (r.listen, r.key)):
            if route.listen in by_port:
                shadowed.append(route)
            else:
                by_port[route.listen] = route
        return cls(by_port, tuple(shadowed))

    def ports(self) -> frozenset[int]:
        return frozenset(self.by_port)


def listener_changes(open_ports: Iterable[int], table: TcpTable) -> tuple[list[int], list[int]]:
    """(ports to start listening on, ports to stop listening on), both ascending."""
    current = set(open_ports)
    wanted = table.ports()
    return sorted(wanted - current), sorted(current - wanted)
