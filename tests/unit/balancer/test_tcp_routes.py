"""The TCP route table: ready backends at the route port's endpoint, one app per listen port,
listener changes, and the counters' window."""

from __future__ import annotations

from typing import Any

import pytest

from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppHealth, AppState, AppVersion, ReplicaHealth
from services.balancer.routes import Backend
from services.balancer.tcp_relay import TcpRelay
from services.balancer.tcp_routes import (
    TcpAppRoute,
    TcpTable,
    listener_changes,
    replica_endpoint,
    tcp_app_routes,
)
from services.balancer.tcp_stats import TcpCollector, TcpStats

DB = AppKey("d", "db")


def state(key: AppKey = DB, **extra: Any) -> AppState:
    doc: dict[str, Any] = {
        "name": key.name,
        "namespace": key.namespace,
        "image": "x:1",
        "ports": {"http": 8080, "db": 5432},
        "route": {"host": "db.test", "port": "http"},
        "tcp_routes": [{"listen": 15432, "port": "db"}, {"listen": 18080, "port": 8080}],
        **extra,
    }
    spec = AppSpec.model_validate(doc)
    return AppState(
        namespace=key.namespace,
        name=key.name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=3,
        versions=[AppVersion(revision=1, spec=spec, replicas=3)],
    )


def replica(rid: str, i: int, *, ready: bool = True, terminating: bool = False) -> ReplicaHealth:
    return ReplicaHealth(
        id=rid,
        revision=1,
        node="n1",
        endpoint=f"127.0.0.1:{31000 + i}",
        endpoints={"http": f"127.0.0.1:{31000 + i}", "db": f"127.0.0.1:{32000 + i}"},
        ready=ready,
        terminating=terminating,
    )


def test_backends_are_the_ready_replicas_at_the_route_ports_endpoint() -> None:
    health = AppHealth(
        namespace="d",
        name="db",
        replicas=[
            replica("r2", 2),
            replica("r1", 1),
            replica("r3", 3, ready=False),
            replica("r4", 4, terminating=True),
        ],
    )
    by_listen = {r.listen: r for r in tcp_app_routes(state(), health)}
    assert [(b.id, b.port) for b in by_listen[15432].backends] == [("r1", 32001), ("r2", 32002)]
    # a port given by number finds the endpoint published under its name
    assert [(b.id, b.port) for b in by_listen[18080].backends] == [("r1", 31001), ("r2", 31002)]
    assert (by_listen[15432].key, by_listen[15432].desired) == (DB, 3)


def test_no_health_yet_means_no_backends_and_no_tcp_routes_means_none() -> None:
    assert all(not r.backends for r in tcp_app_routes(state(), None))
    assert tcp_app_routes(state(tcp_routes=[]), None) == []


@pytest.mark.parametrize(
    ("endpoints", "ref", "expected"),
    [
        ({"db": "h:1", "http": "h:2"}, "db", "h:1"),
        ({"db": "h:1", "http": "h:2"}, 5432, "h:1"),
        ({"5432": "h:3"}, 5432, "h:3"),  # a port the agent keyed by number
        ({"http": "h:2"}, "db", ""),  # not published: no backend
        ({}, "http", "h:9"),  # an older health: only the route port's endpoint
        ({}, "db", ""),
    ],
)
def test_replica_endpoint(endpoints: dict[str, str], ref: str | int, expected: str) -> None:
    r = ReplicaHealth(id="r", revision=1, node="n", endpoint="h:9", endpoints=endpoints, ready=True)
    assert replica_endpoint(state().spec, r, ref) == expected


def route(key: str, listen: int) -> TcpAppRoute:
    return TcpAppRoute(AppKey.parse(key), listen, "round_robin")


def test_a_listen_port_goes_to_the_app_that_sorts_first() -> None:
    table = TcpTable.build([route("b/x", 9000), route("a/y", 9000), route("a/y", 9001)])
    assert table.by_port[9000].key == AppKey("a", "y")
    assert [r.key for r in table.shadowed] == [AppKey("b", "x")]
    assert table.ports() == {9000, 9001}


def test_listener_changes() -> None:
    table = TcpTable.build([route("a/x", 9000), route("a/y", 9002)])
    assert listener_changes([9000, 9001], table) == ([9002], [9001])
    assert listener_changes([], TcpTable()) == ([], [])


def test_the_window_and_the_cumulative_counters() -> None:
    stats = TcpStats()
    s = stats.app(DB)
    s.opened("r1")
    s.opened("r1")
    s.sent(10)
    s.received(30)
    s.failed()
    s.closed("r1")
    window = stats.snapshot()["d/db"]
    assert (window.connections, window.active, window.errors) == (3, 1, 1)
    assert (window.bytes_in, window.bytes_out, window.per_replica) == (10, 30, {"r1": 1})
    again = stats.snapshot()["d/db"]  # a new window; the open connection still shows
    assert (again.connections, again.active, again.bytes_in) == (0, 1, 0)
    s.closed("r1")
    assert stats.snapshot() == {}  # idle apps are left out
    families = {m.name: m for m in TcpCollector(stats).collect()}
    samples = {
        (x.name, x.labels.get("direction", "")): x.value
        for m in families.values()
        for x in m.samples
    }
    assert samples[("shoal_lb_tcp_connections_total", "")] == 3
    assert samples[("shoal_lb_tcp_bytes_total", "in")] == 10
    assert samples[("shoal_lb_tcp_bytes_total", "out")] == 30
    assert samples[("shoal_lb_tcp_errors_total", "")] == 1
    assert samples[("shoal_lb_tcp_active_connections", "")] == 0


def backends(*ids: str) -> tuple[Backend, ...]:
    out = []
    for i, rid in enumerate(ids):
        b = Backend.make(rid, 1, f"127.0.0.1:{40000 + i}")
        assert b is not None
        out.append(b)
    return tuple(out)


@pytest.mark.parametrize("algorithm", ["round_robin", "least_conn", "hash"])
def test_choose_skips_tried_and_ejected_replicas_and_panics_when_all_are(algorithm: str) -> None:
    relay = TcpRelay("127.0.0.1", TcpStats())
    r = TcpAppRoute(DB, 9000, algorithm, backends("r1", "r2", "r3"))
    relay.ejected.add("r1", 60)
    picked = {relay.choose(r, f"10.0.0.{i}", set()).id for i in range(12)}  # type: ignore[union-attr]
    assert "r1" not in picked
    second = relay.choose(r, "10.0.0.1", {"r2", "r3"})
    assert second is not None
    assert second.id == "r1"  # every other one tried: the ejected one
    assert relay.choose(r, "10.0.0.1", {"r1", "r2", "r3"}) is None


def test_round_robin_spreads_and_least_conn_prefers_the_idle_replica() -> None:
    relay = TcpRelay("127.0.0.1", TcpStats())
    rr = TcpAppRoute(DB, 9000, "round_robin", backends("r1", "r2"))
    assert [relay.choose(rr, "c", set()).id for _ in range(4)] == ["r1", "r2", "r1", "r2"]  # type: ignore[union-attr]
    lc = TcpAppRoute(DB, 9001, "least_conn", backends("r1", "r2"))
    relay.open_per_replica["r1"] = 5
    assert {relay.choose(lc, "c", set()).id for _ in range(4)} == {"r2"}  # type: ignore[union-attr]
