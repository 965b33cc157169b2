"""core.mesh: network names, subnets, VIP allocation, names and the allow rule (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import ValidationError

from core.keys import AppKey
from core.mesh import (
    allocate_vips,
    attach,
    bridge_name,
    create_body,
    may_reach,
    network_filters,
    network_name,
    parse_network,
    resolve_name,
    subnet_candidates,
    vip_range,
)
from core.spec import AppSpec
from core.state import AssignedReplica
from services.agent.containers import create_config

SUBNET = ipaddress.IPv4Network("10.200.7.0/24")


def spec(**fields: Any) -> AppSpec:
    return AppSpec.model_validate({"name": "db", "namespace": "prod", "image": "img:1", **fields})


def test_network_names_are_unique_docker_names_and_bridges_fit_ifnamsiz() -> None:
    a = network_name("e2e/x", "n1", "prod")
    assert a.startswith("shoal-e2e-x.n1.prod-")
    assert all(c.isalnum() or c in "_.-" for c in a)
    assert a != network_name("e2e.x", "n1", "prod")  # the digest tells '/' from '.'
    assert a != network_name("e2e/x", "n2", "prod")
    assert len(bridge_name(a)) <= 15
    assert bridge_name(a) != bridge_name(network_name("e2e/x", "n2", "prod"))
    assert network_filters("p", "n1") == ["shoal.mesh=true", "shoal.prefix=p", "shoal.node=n1"]


def test_subnet_candidates_cover_the_pool_once_from_a_name_chosen_start() -> None:
    first = list(subnet_candidates("10.200.0.0/22", "a"))
    assert sorted(first) == list(ipaddress.IPv4Network("10.200.0.0/22").subnets(new_prefix=24))
    assert len(set(first)) == 4
    with pytest.raises(ValueError, match="smaller than a /24"):
        list(subnet_candidates("10.0.0.0/25", "a"))


def test_create_body_splits_the_subnet_and_round_trips_through_inspect() -> None:
    body = create_body("p", "n1", "prod", SUBNET)
    assert body["CheckDuplicate"] is True
    assert body["Labels"] == {
        "shoal.mesh": "true",
        "shoal.prefix": "p",
        "shoal.node": "n1",
        "shoal.ns": "prod",
    }
    assert body["IPAM"]["Config"] == [
        {"Subnet": "10.200.7.0/24", "IPRange": "10.200.7.0/25", "Gateway": "10.200.7.1"}
    ]
    inspected = {**body, "IPAM": {"Config": body["IPAM"]["Config"]}}
    network = parse_network(inspected)
    assert network is not None
    assert network.namespace == "prod"
    assert network.gateway == ipaddress.IPv4Address("10.200.7.1")
    assert network.bridge == bridge_name(body["Name"])
    assert network.holds("10.200.7.40")
    assert not network.holds("10.200.8.40")
    assert not network.holds("not an address")
    assert parse_network({"Name": "x", "Labels": {}, "IPAM": {"Config": []}}) is None
    assert parse_network({"Labels": {"shoal.mesh": "true"}, "IPAM": {"Config": [{}]}}) is None


def test_a_container_on_the_mesh_gets_its_network_dns_and_search_domain() -> None:
    network = parse_network(create_body("p", "n1", "prod", SUBNET))
    assert network is not None
    host, networking = attach(network)
    assert host == {
        "NetworkMode": network.name,
        "Dns": ["10.200.7.1"],
        "DnsSearch": ["prod.shoal.internal"],
    }
    assert networking == {"EndpointsConfig": {network.name: {}}}
    replica = AssignedReplica(id="prod.db.00000001", namespace="prod", app="db", revision=1)
    cfg = create_config(
        spec(ports={"pg": 5432}),
        replica,
        prefix="p",
        node="n1",
        address="127.0.0.2",
        network=network,
    )
    assert cfg["HostConfig"]["NetworkMode"] == network.name
    assert cfg["HostConfig"]["PortBindings"] == {
        "5432/tcp": [{"HostIp": "127.0.0.2", "HostPort": ""}]
    }
    assert cfg["NetworkingConfig"] == networking
    plain = create_config(spec(), replica, prefix="p", node="n1", address="127.0.0.2")
    assert "NetworkMode" not in plain["HostConfig"]
    assert "NetworkingConfig" not in plain


def test_vips_come_from_the_upper_half_and_stick() -> None:
    pool = vip_range(SUBNET)
    assert pool[0] == ipaddress.IPv4Address("10.200.7.128")
    assert pool[-1] == ipaddress.IPv4Address("10.200.7.254")
    assert len(pool) == 127
    first = allocate_vips(["db", "web", "cache"], SUBNET, {})
    assert len(set(first.values())) == 3
    assert set(first.values()) <= set(pool)
    assert allocate_vips(["cache", "web", "db"], SUBNET, {}) == first  # order-free
    # Adding and removing apps never moves the VIP of an app that stays.
    more = allocate_vips(["db", "web", "cache", *[f"a{i}" for i in range(100)]], SUBNET, first)
    assert {k: more[k] for k in first} == first
    fewer = allocate_vips(["web", "a7"], SUBNET, more)
    assert fewer == {"web": more["web"], "a7": more["a7"]}


def test_vips_run_out_at_127_apps_per_namespace_and_node() -> None:
    out = allocate_vips([f"a{i}" for i in range(130)], SUBNET, {})
    assert len(out) == 127
    assert len(set(out.values())) == 127


@pytest.mark.parametrize(
    ("qname", "querier", "key"),
    [
        ("db", "prod", AppKey("prod", "db")),
        ("db.", "prod", AppKey("prod", "db")),
        ("DB.Prod", "test", AppKey("prod", "db")),
        ("db.prod", "test", AppKey("prod", "db")),
        ("db.prod.shoal.internal", "test", AppKey("prod", "db")),
        ("db.prod.shoal.internal.", "test", AppKey("prod", "db")),
        ("db.shoal.internal", "prod", AppKey("prod", "db")),
        ("a.b.c", "prod", None),
        ("", "prod", None),
        (".db", "prod", None),
    ],
)
def test_name_forms(qname: str, querier: str, key: AppKey | None) -> None:
    assert resolve_name(qname, querier) == key


def test_namespaces_are_isolated_unless_the_app_allows_them() -> None:
    assert may_reach("prod", spec())
    assert not may_reach("test", spec())
    assert may_reach("test", spec(network={"allow_from": ["test"]}))
    assert not may_reach("dev", spec(network={"allow_from": ["test"]}))
    assert may_reach("dev", spec(network={"allow_from": ["*"]}))


def test_network_spec_is_validated() -> None:
    with pytest.raises(ValidationError, match="cannot have a route"):
        spec(ports={"http": 80}, route={"port": "http"}, network={"internal": True})
    with pytest.raises(ValidationError, match="must be a DNS label"):
        spec(network={"allow_from": ["Not_A_Namespace"]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        spec(network={"allow": ["test"]})
    internal = spec(ports={"pg": 5432}, network={"internal": True})
    assert internal.network.internal
    assert spec().network.allow_from == []
    # Reachability is not what containers are made of: no new revision.
    assert spec(network={"allow_from": ["test"]}).template_hash() == spec().template_hash()
