"""The mesh's routing table, listeners and DNS lookups from bus state (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

from core.keys import AppKey
from core.mesh import DOMAIN, create_body, parse_network
from core.spec import AppSpec
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    NodeReplicas,
    ReplicaHealth,
    ReplicaStatus,
)
from services.mesh.table import (
    build_table,
    lookup,
    plan_listeners,
    plan_vips,
    source_namespace,
)

DB = AppKey("prod", "db")


def app(name: str = "db", namespace: str = "prod", **fields: Any) -> AppState:
    spec = AppSpec.model_validate(
        {"name": name, "namespace": namespace, "image": "img:1", **fields}
    )
    return AppState(
        namespace=namespace,
        name=name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=2,
        versions=[AppVersion(revision=1, spec=spec, replicas=2)],
    )


def replica(rid: str, node: str, **endpoints: str) -> ReplicaStatus:
    return ReplicaStatus(
        id=rid,
        namespace="prod",
        app="db",
        revision=1,
        node=node,
        phase="running",
        endpoints=endpoints,
    )


def health(*states: tuple[str, bool, bool]) -> AppHealth:
    return AppHealth(
        namespace="prod",
        name="db",
        replicas=[
            ReplicaHealth(
                id=rid, revision=1, node="n", endpoint="x:1", ready=ready, terminating=term
            )
            for rid, ready, term in states
        ],
    )


PORTS = {"ports": {"http": 8080, "tcp": 9000}}
REPORTS = [
    NodeReplicas(node="n2", replicas=[replica("r1", "n2", http="127.0.0.3:1", tcp="127.0.0.3:2")]),
    NodeReplicas(node="n3", replicas=[replica("r2", "n3", http="127.0.0.4:1", tcp="127.0.0.4:2")]),
]


def test_only_ready_replicas_that_are_not_draining_are_backends() -> None:
    apps = {DB: app(**PORTS)}
    table = build_table(apps, {DB: health(("r1", True, False), ("r2", True, False))}, REPORTS)
    assert table[DB].endpoints == {
        "http": ("127.0.0.3:1", "127.0.0.4:1"),
        "tcp": ("127.0.0.3:2", "127.0.0.4:2"),
    }
    draining = build_table(apps, {DB: health(("r1", True, False), ("r2", False, True))}, REPORTS)
    assert draining[DB].endpoints == {"http": ("127.0.0.3:1",), "tcp": ("127.0.0.3:2",)}
    unready = build_table(apps, {DB: health(("r1", False, False))}, REPORTS)
    assert unready[DB].endpoints == {"http": (), "tcp": ()}
    assert build_table(apps, {}, REPORTS)[DB].endpoints == {"http": (), "tcp": ()}
    # A replica its agent reports exited is out before health's next probe says so.
    exited = [
        REPORTS[0],
        NodeReplicas(
            node="n3",
            replicas=[
                replica("r2", "n3", http="127.0.0.4:1", tcp="127.0.0.4:2").model_copy(
                    update={"phase": "exited"}
                )
            ],
        ),
    ]
    table = build_table(apps, {DB: health(("r1", True, False), ("r2", True, False))}, exited)
    assert table[DB].endpoints == {"http": ("127.0.0.3:1",), "tcp": ("127.0.0.3:2",)}
    # A ready replica whose node has not reported the port yet is no backend for it.
    partial = [NodeReplicas(node="n2", replicas=[replica("r1", "n2", http="127.0.0.3:1")])]
    table = build_table(apps, {DB: health(("r1", True, False))}, partial)
    assert table[DB].endpoints == {"http": ("127.0.0.3:1",), "tcp": ()}


def networks() -> dict[str, Any]:
    out = {}
    for i, ns in enumerate(("prod", "test")):
        network = parse_network(create_body("p", "n1", ns, ipaddress.IPv4Network(f"10.9.{i}.0/24")))
        assert network is not None
        out[ns] = network
    return out


def test_vips_and_listeners_per_app_port() -> None:
    apps = {DB: app(**PORTS), AppKey("test", "t"): app("t", "test", ports={"http": 80})}
    nets = networks()
    vips = plan_vips(apps, nets, {})
    assert vips[DB] in nets["prod"].subnet
    assert vips[AppKey("test", "t")] in nets["test"].subnet
    assert plan_vips(apps, nets, vips) == vips
    assert plan_vips({**apps, AppKey("dev", "x"): app("x", "dev")}, nets, vips) == vips  # no net
    listeners = plan_listeners(apps, vips)
    got = sorted((str(v), p, str(x.app), x.port_name) for (v, p), x in listeners.items())
    assert got == sorted(
        [
            (str(vips[DB]), 8080, "prod/db", "http"),
            (str(vips[DB]), 9000, "prod/db", "tcp"),
            (str(vips[AppKey("test", "t")]), 80, "test/t", "http"),
        ]
    )
    assert source_namespace("10.9.1.5", nets.values()) == "test"
    assert source_namespace("127.0.0.1", nets.values()) is None


def test_lookup_answers_allowed_names_errors_cluster_names_and_forwards_the_rest() -> None:
    vip = ipaddress.IPv4Address("10.9.0.130")
    apps = {DB: app(**PORTS), AppKey("prod", "open"): app("open", network={"allow_from": ["*"]})}
    vips = {DB: vip, AppKey("prod", "open"): ipaddress.IPv4Address("10.9.0.131")}
    assert lookup("db", "prod", apps, vips, DOMAIN) == [vip]
    assert lookup("db.prod", "prod", apps, vips, DOMAIN) == [vip]
    assert lookup("db.prod.shoal.internal", "prod", apps, vips, DOMAIN) == [vip]
    assert lookup("db.prod", "test", apps, vips, DOMAIN) == []  # isolated: a name error
    assert lookup("open.prod", "test", apps, vips, DOMAIN) == [vips[AppKey("prod", "open")]]
    assert lookup("db", "test", apps, vips, DOMAIN) is None  # test/db is not an app: upstream
    assert lookup("nope.prod.shoal.internal", "prod", apps, vips, DOMAIN) == []
    assert lookup("example.com", "prod", apps, vips, DOMAIN) is None
    assert lookup("db", "prod", apps, {}, DOMAIN) == []  # no VIP yet


def test_an_alias_is_one_more_name_and_an_apps_own_name_wins() -> None:
    vip, other = ipaddress.IPv4Address("10.9.0.130"), ipaddress.IPv4Address("10.9.0.131")
    apps = {
        DB: app(**PORTS, network={"aliases": ["postgres", "cache"]}),
        AppKey("prod", "cache"): app("cache"),
    }
    vips = {DB: vip, AppKey("prod", "cache"): other}
    assert lookup("postgres", "prod", apps, vips, DOMAIN) == [vip]
    assert lookup("postgres.prod.shoal.internal", "prod", apps, vips, DOMAIN) == [vip]
    assert lookup("cache", "prod", apps, vips, DOMAIN) == [other]  # the app named cache
    assert lookup("postgres.prod", "test", apps, vips, DOMAIN) == []  # isolated alike
    assert lookup("postgres", "test", apps, vips, DOMAIN) is None
