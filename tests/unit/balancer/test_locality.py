"""Region locality: the route's tiers (``locality.split`` through ``app_route``) and the
policy trying the local tier, then the remote one, then panic routing over both."""

from __future__ import annotations

from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppHealth, AppState, AppVersion, ReplicaHealth
from services.balancer.locality import split
from services.balancer.policy import Policy, ProxyOptions, Refused
from services.balancer.routes import AppRoute, Backend, RouteTable, app_route
from tests.unit.balancer.test_policy import Scripted

WEB = AppKey("d", "web")
REGIONS = {"eu-1": "eu", "eu-2": "eu", "us-1": "us"}


def app() -> AppState:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "namespace": "d",
            "image": "x",
            "ports": {"http": 80},
            "route": {"host": "web.test"},
            "replicas": 3,
        }
    )
    return AppState(
        namespace="d",
        name="web",
        revision=1,
        generation=1,
        spec=spec,
        replicas=3,
        versions=[AppVersion(revision=1, spec=spec, replicas=3)],
    )


def health(*replicas: tuple[str, str, bool]) -> AppHealth:
    return AppHealth(
        namespace="d",
        name="web",
        replicas=[
            ReplicaHealth(
                id=rid, revision=1, node=node, endpoint=f"127.0.0.{i + 2}:80", ready=ready
            )
            for i, (rid, node, ready) in enumerate(replicas)
        ],
    )


def ids(backends: object) -> list[str]:
    return [b.id for b in backends]  # type: ignore[attr-defined]


def test_without_a_region_every_ready_replica_is_one_tier() -> None:
    h = health(("a", "eu-1", True), ("b", "us-1", True))
    route = app_route(app(), h, REGIONS, None)
    assert route is not None
    assert ids(route.backends) == ["a", "b"]
    assert route.remote == []
    assert app_route(app(), h) == route  # the old signature means the same


def test_the_regions_own_replicas_come_first_and_the_others_are_remote() -> None:
    h = health(("a", "eu-1", True), ("b", "us-1", True), ("c", "eu-2", True), ("d", "x", True))
    eu = app_route(app(), h, REGIONS, "eu")
    us = app_route(app(), h, REGIONS, "us")
    assert eu is not None
    assert us is not None
    assert (ids(eu.backends), ids(eu.remote)) == (["a", "c"], ["b", "d"])
    # a node whose region is not known counts as remote
    assert (ids(us.backends), ids(us.remote)) == (["b"], ["a", "c", "d"])


def test_no_ready_local_replica_fails_over_to_the_others() -> None:
    h = health(("a", "eu-1", True), ("b", "us-1", False), ("c", "eu-2", True))
    us = app_route(app(), h, REGIONS, "us")
    assert us is not None
    assert ids(us.backends) == ["a", "c"]
    assert us.remote == []
    # an unknown region of the balancer itself: the same
    tiers = split(us.backends, {"a": "eu-1", "c": "eu-2"}, REGIONS, "ap")
    assert (ids(tiers.local), tiers.remote) == (["a", "c"], ())


def tiered(local: list[str], remote: list[str], **options: float) -> Policy:
    p = Policy(ProxyOptions(**options), instance="lb1")  # type: ignore[arg-type]
    make = [Backend(rid, 1, "127.0.0.1", 8000 + i) for i, rid in enumerate(local + remote)]
    route = AppRoute(WEB, None, "/", "round_robin", "client_ip", make[: len(local)])
    route.remote = make[len(local) :]
    p.set_table(RouteTable([route]))
    return p


async def test_requests_stay_in_the_region_while_a_local_replica_answers() -> None:
    p = tiered(["a", "b"], ["x"])
    attempts: list[str] = []
    for _ in range(6):
        ex = Scripted()
        await p.serve(ex, "", "/")
        attempts += ex.attempts
    assert set(attempts) == {"a", "b"}


async def test_local_replicas_refused_go_to_the_remote_tier_before_panic() -> None:
    p = tiered(["a", "b"], ["x", "y"], retries=2)
    ex = Scripted({"a": Refused("x"), "b": Refused("x")})
    await p.serve(ex, "", "/")
    assert ex.attempts[:2] in (["a", "b"], ["b", "a"])
    assert ex.attempts[2] in ("x", "y")
    assert ex.replies == []
    # both local ones ejected: the next requests go remote without trying them
    ex = Scripted()
    await p.serve(ex, "", "/")
    assert ex.attempts in (["x"], ["y"])


async def test_every_replica_of_both_tiers_ejected_is_still_tried_local_first() -> None:
    p = tiered(["a"], ["x"], retries=3)
    await p.serve(Scripted({"a": Refused("x"), "x": Refused("x")}), "", "/")
    assert "a" in p.ejected
    assert "x" in p.ejected
    ex = Scripted()
    await p.serve(ex, "", "/")
    assert ex.attempts == ["a"]  # panic routing, in the same order of tiers
    assert ex.replies == []
