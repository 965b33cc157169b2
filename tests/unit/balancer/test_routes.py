"""The route table: host beats no host, longest prefix wins, segment boundaries, weights."""

from __future__ import annotations

from typing import Any

import pytest

from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppHealth, AppState, AppVersion, ReplicaHealth
from services.balancer.routes import (
    AppRoute,
    Backend,
    RouteTable,
    app_route,
    normalize_host,
    normalize_path,
    prefix_matches,
    version_weights,
)


def route(key: str, host: str | None = None, path: str = "/") -> AppRoute:
    return AppRoute(AppKey.parse(key), host, path, "round_robin", "client_ip")


TABLE = RouteTable(
    [
        route("d/site"),
        route("d/api", path="/api"),
        route("d/api-v2", path="/api/v2"),
        route("d/shop", host="shop.test"),
        route("d/shop-api", host="shop.test", path="/api"),
        route("d/wild", host="*.apps.test"),
        route("d/exact", host="x.apps.test", path="/only"),
    ]
)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("other.test", "/", "d/site"),
        ("", "/anything", "d/site"),
        ("other.test", "/api", "d/api"),
        ("other.test", "/api/users", "d/api"),
        ("other.test", "/apix", "d/site"),  # segment boundary
        ("other.test", "/api/v2/x", "d/api-v2"),  # longest prefix
        ("shop.test", "/", "d/shop"),  # host beats hostless
        ("shop.test", "/api/v2", "d/shop-api"),  # host beats a longer hostless prefix
        ("a.apps.test", "/", "d/wild"),
        ("x.apps.test", "/only/1", "d/exact"),
        ("x.apps.test", "/", "d/wild"),  # exact host has no matching path: wildcard
        ("apps.test", "/", "d/site"),  # a wildcard needs a subdomain
    ],
)
def test_match(host: str, path: str, expected: str) -> None:
    r = TABLE.match(host, path)
    assert r is not None
    assert str(r.key) == expected


def test_no_match_and_ties() -> None:
    only_host = RouteTable([route("d/a", host="a.test")])
    assert only_host.match("b.test", "/") is None
    tie = RouteTable([route("d/b", path="/x"), route("d/a", path="/x")])
    assert tie.match("", "/x").key == AppKey("d", "a")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("prefix", "path", "ok"),
    [
        ("/", "/", True),
        ("/a", "/a", True),
        ("/a", "/a/", True),
        ("/a", "/ab", False),
        ("/a/", "/a/b", True),
        ("/a/", "/a", False),
    ],
)
def test_prefix_matches(prefix: str, path: str, ok: bool) -> None:
    assert prefix_matches(prefix, path) is ok


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("Example.COM:8080", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:80", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        (None, ""),
    ],
)
def test_normalize_host(raw: str | None, host: str) -> None:
    assert normalize_host(raw) == host


def state(
    versions: list[tuple[int, int, int | None]], route: dict[str, Any] | None = None
) -> AppState:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "x",
            "ports": {"http": 80},
            "route": route or {"host": "web.test", "algorithm": "weighted"},
            "autoscale": {"min": 0, "max": 3, "target": {"rps_per_replica": 5}},
        }
    )
    return AppState(
        namespace="d",
        name="web",
        revision=versions[-1][0],
        generation=1,
        spec=spec,
        replicas=sum(n for _, n, _ in versions),
        versions=[AppVersion(revision=r, spec=spec, replicas=n, weight=w) for r, n, w in versions],
    )


def test_version_weights() -> None:
    assert version_weights(state([(1, 3, None)])) == {1: 1.0}
    assert version_weights(state([(1, 3, None), (2, 1, None)])) == {1: 0.75, 2: 0.25}
    assert version_weights(state([(1, 3, 90), (2, 1, 10)])) == {1: 0.9, 2: 0.1}
    assert version_weights(state([(1, 3, None), (2, 1, 20)])) == {1: 0.8, 2: 0.2}


def rh(rid: str, rev: int, ready: bool = True, terminating: bool = False) -> ReplicaHealth:
    return ReplicaHealth(
        id=rid,
        revision=rev,
        node="n",
        endpoint=f"127.0.0.{rev}:80{len(rid)}",
        ready=ready,
        terminating=terminating,
    )


def test_app_route_only_ready_replicas_with_per_replica_weights() -> None:
    app = state([(1, 2, 90), (2, 1, 10)])
    health = AppHealth(
        namespace="d",
        name="web",
        replicas=[
            rh("a", 1),
            rh("b", 1),
            rh("c", 2),
            rh("d", 1, ready=False),
            rh("e", 1, terminating=True),
        ],
    )
    r = app_route(app, health)
    assert r is not None
    assert [b.id for b in r.backends] == ["a", "b", "c"]
    assert [round(b.weight, 3) for b in r.backends] == [0.45, 0.45, 0.1]
    assert r.terminating == frozenset({"e"})
    assert r.scale_to_zero
    assert r.backends[0].base == "http://127.0.0.1:801"


def test_app_without_route_or_health() -> None:
    app = state([(1, 1, None)])
    no_route = app.model_copy(update={"spec": app.spec.model_copy(update={"route": None})})
    assert app_route(no_route, None) is None
    r = app_route(app, None)
    assert r is not None
    assert r.backends == []
    assert r.key == AppKey("d", "web")


def test_backend_endpoints() -> None:
    assert Backend.make("x", 1, "[::1]:8080").base == "http://[::1]:8080"  # type: ignore[union-attr]
    assert Backend.make("x", 1, "nonsense") is None
    assert Backend.make("x", 1, "") is None


@pytest.mark.parametrize(
    ("route", "error"),
    [
        ({"algorithm": "random"}, "round_robin"),
        ({"algorithm": "hash", "hash_on": "cookie:x"}, "must be 'client_ip' or 'header:<Name>'"),
        ({"algorithm": "hash", "hash_on": "header:"}, "must be 'client_ip' or 'header:<Name>'"),
    ],
)
def test_route_spec_validation(route: dict[str, Any], error: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=error):
        AppSpec.model_validate({"name": "a", "image": "x", "ports": {"http": 80}, "route": route})
    ok = AppSpec.model_validate(
        {
            "name": "a",
            "image": "x",
            "ports": {"http": 80},
            "route": {"algorithm": "hash", "hash_on": "header:X-User"},
        }
    )
    assert ok.route is not None
    assert ok.route.hash_on == "header:X-User"


@pytest.mark.parametrize(
    ("raw", "routed"),
    [
        ("/public", "/public"),
        ("/public/../admin", "/admin"),
        ("/public/./x/../../admin/", "/admin/"),
        ("/%70ublic", "/public"),
        ("/public/%2e%2E/admin", "/admin"),
        ("/a%2fb", "/a%2Fb"),  # an escaped slash stays escaped: never a segment boundary
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../etc", "/etc"),
        ("/a/.hidden/..x", "/a/.hidden/..x"),
        ("/%7euser", "/~user"),
        ("*", "*"),
        ("/%zz", None),
        ("/a%2", None),
    ],
)
def test_paths_are_normalised_before_routing(raw: str, routed: str | None) -> None:
    assert normalize_path(raw) == routed
