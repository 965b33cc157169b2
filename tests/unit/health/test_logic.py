"""The health monitor's pure logic: targets, the probe state machine, AppHealth, sharding."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.keys import AppKey
from core.probes import ProbeState, step
from core.spec import AppSpec, Probe
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    NodeReplicas,
    ReplicaHealth,
    ReplicaStatus,
)
from services.health.logic import (
    REACHABILITY,
    ReplicaIndex,
    StateKey,
    Target,
    app_health,
    endpoint_host,
    foreign_endpoints,
    owner,
    probes_to_run,
    same_health,
    seeded_state,
    targets_for,
    transitions,
)


def make_app(health: dict[str, object] | None = None, route_port: str = "http") -> AppState:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "x",
            "ports": {"admin": 9000, "http": 8080},
            "route": {"port": route_port},
            "health": health or {},
        }
    )
    return AppState(
        namespace="default",
        name="web",
        revision=1,
        generation=1,
        spec=spec,
        replicas=2,
        versions=[AppVersion(revision=1, spec=spec, replicas=2)],
    )


def status(rid: str, phase: str = "running", **kw: object) -> ReplicaStatus:
    return ReplicaStatus.model_validate(
        {
            "id": rid,
            "namespace": "default",
            "app": "web",
            "revision": 1,
            "node": "n1",
            "phase": phase,
            "endpoints": {"http": f"127.0.0.1:{1000 + len(rid)}", "admin": "127.0.0.1:9999"},
            "started_at": 100.0,
            **kw,
        }
    )


PROBE = Probe(http="/healthz", failures=3, successes=2)


# -- the state machine -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "ok"),
    [
        ([], False),
        ([True], False),  # successes=2
        ([True, True], True),
        ([True, False, True], False),  # not consecutive
        ([True, True, False, False], True),  # failures=3
        ([True, True, False, False, False], False),
        ([True, True, False, False, True, False, False], True),  # a success resets failures
    ],
)
def test_readiness_thresholds(results: list[bool], ok: bool) -> None:
    state = ProbeState.initial("readiness", 0.0)
    for i, r in enumerate(results):
        state = step(state, PROBE, r, "" if r else "HTTP 503", float(i))
    assert state.ok is ok


def test_liveness_starts_alive_and_since_marks_the_flip() -> None:
    probe = Probe(tcp="http", failures=2)
    s = ProbeState.initial("liveness", 0.0)
    assert s.ok
    s = step(s, probe, False, "refused", 1.0)
    assert s.ok
    assert s.since == 0.0
    assert s.reason == "refused"
    s = step(s, probe, False, "refused", 2.0)
    assert not s.ok
    assert s.since == 2.0
    s = step(s, probe, True, "", 3.0)
    assert s.ok
    assert s.since == 3.0
    assert s.reason == ""


@given(st.lists(st.booleans(), max_size=40))
def test_state_flips_only_at_thresholds(results: list[bool]) -> None:
    state = ProbeState.initial("readiness", 0.0)
    for i, r in enumerate(results):
        new = step(state, PROBE, r, "x", float(i))
        if new.ok and not state.ok:
            assert new.successes >= PROBE.successes
        if state.ok and not new.ok:
            assert new.failures >= PROBE.failures
        assert new.results == state.results + 1
        state = new


# -- targets and verdicts ----------------------------------------------------------------


def test_targets_resolve_route_and_probe_endpoints() -> None:
    app = make_app({"readiness": {"http": "/ready", "port": "admin"}, "liveness": {"tcp": "http"}})
    (t,) = targets_for(app, [status("r1"), status("x", app="other")])
    assert t.endpoint == "127.0.0.1:1002"
    assert t.readiness_endpoint == "127.0.0.1:9999"
    assert t.liveness_endpoint == "127.0.0.1:1002"
    assert probes_to_run(t) == ["readiness", "liveness"]


def test_a_replica_of_a_revision_no_longer_desired_gets_no_traffic() -> None:
    # After a rollback the app lists revision 1 only: a leftover revision-2 replica must not
    # be judged by revision 1's probes (it would pass them) but leave rotation at once.
    app = make_app({"readiness": {"http": "/healthz", "port": "http"}})
    (leftover,) = targets_for(app, [status("r2", revision=2)])
    assert leftover.leaving
    assert probes_to_run(leftover) == []
    verdict = app_health(app, [leftover], {}, None, 10.0).replicas[0]
    assert not verdict.ready
    assert verdict.terminating
    assert verdict.reason == "revision 2 is no longer desired"


# -- an offline node (issue 14: the agent's absence alone takes nothing out of rotation) --


def ready_state(target: Target) -> dict[StateKey, ProbeState]:
    seeded = ProbeState.initial("readiness", 0.0, seeded=True)
    return {(target.replica, target.started_at, "readiness"): seeded}


def test_replicas_of_an_offline_node_stay_and_keep_their_probes() -> None:
    app = make_app({"readiness": {"http": "/healthz", "port": "http"}})
    targets = targets_for(app, [status("r1"), status("r2", node="n2")], offline_nodes={"n2"})
    assert [t.replica for t in targets] == ["r1", "r2"]
    offline = targets[1]
    assert offline.offline
    assert offline.readiness == app.spec.health.readiness
    assert probes_to_run(offline) == ["readiness"]
    verdict = app_health(app, [offline], ready_state(offline), None, 10.0).replicas[0]
    assert verdict.ready
    assert not verdict.terminating


@pytest.mark.parametrize("health", [{}, {"readiness": {"exec": ["true"]}}])
def test_without_a_probe_health_can_run_an_offline_replica_gets_a_tcp_check(
    health: dict[str, object],
) -> None:
    app = make_app(health)
    (t,) = targets_for(app, [status("r1", exec_ready=True)], offline_nodes={"n1"})
    assert t.readiness is REACHABILITY
    assert t.readiness_endpoint == t.endpoint == "127.0.0.1:1002"
    assert probes_to_run(t) == ["readiness"]
    # seeded from the last published verdict: no flap when the agent goes away
    before = ReplicaHealth(
        id="r1", revision=1, node="n1", endpoint=t.endpoint, ready=True, started_at=100.0
    )
    assert seeded_state(
        AppHealth(namespace="default", name="web", replicas=[before]), t, "readiness"
    )
    state = ProbeState.initial("readiness", 0.0, seeded=True)
    for i in range(REACHABILITY.failures):
        state = step(state, REACHABILITY, False, "connection refused", float(i))
    key = (t.replica, t.started_at, "readiness")
    verdict = app_health(app, [t], {key: state}, None, 10.0).replicas[0]
    assert not verdict.ready
    assert verdict.reason == "node offline and endpoint unreachable: connection refused"
    # the agent is back: its report rules again, the check stops
    (back,) = targets_for(app, [status("r1", exec_ready=True)])
    assert back.readiness is app.spec.health.readiness
    assert probes_to_run(back) == []


def test_an_offline_replica_without_an_endpoint_keeps_its_last_verdict() -> None:
    app = make_app({})
    (t,) = targets_for(app, [status("r1", endpoints={})], offline_nodes={"n1"})
    assert t.hold
    assert probes_to_run(t) == []
    was = ReplicaHealth(id="r1", revision=1, node="n1", endpoint="", ready=True, started_at=100.0)
    previous = AppHealth(namespace="default", name="web", replicas=[was])
    assert app_health(app, [t], {}, previous, 10.0).replicas[0].ready
    other_start = previous.model_copy(
        update={"replicas": [was.model_copy(update={"started_at": 50.0})]}
    )
    assert not app_health(app, [t], {}, other_start, 10.0).replicas[0].ready
    assert not app_health(app, [t], {}, None, 10.0).replicas[0].ready


def test_a_replica_its_node_is_no_longer_assigned_leaves_rotation() -> None:
    app = make_app({"readiness": {"http": "/healthz", "port": "http"}})
    statuses = [status("r1"), status("r2"), status("r3", node="n2")]
    assigned = {"n1": frozenset({"r1"})}  # n2's assignment is not known: kept as reported
    r1, r2, r3 = targets_for(app, statuses, assigned=assigned)
    assert not r1.unassigned
    assert r2.unassigned
    assert not r3.unassigned
    assert probes_to_run(r2) == []
    verdict = app_health(app, [r2], ready_state(r2), None, 10.0).replicas[0]
    assert not verdict.ready
    assert verdict.terminating
    assert verdict.reason == "no longer assigned to node n1"


def test_an_unassigned_replica_of_an_offline_node_is_left_out() -> None:
    # the scheduler replaced it elsewhere; its node's last report still lists it
    app = make_app({})
    targets = targets_for(
        app, [status("r1"), status("r2")], offline_nodes={"n1"}, assigned={"n1": {"r1"}}
    )
    assert [t.replica for t in targets] == ["r1"]


def test_exec_probes_and_non_running_replicas_are_not_probed_here() -> None:
    app = make_app({"readiness": {"exec": ["true"]}})
    running, pending = targets_for(app, [status("r1"), status("r2", phase="pending")])
    assert probes_to_run(running) == []
    assert probes_to_run(pending) == []


def verdict(app: AppState, statuses: list[ReplicaStatus], states: dict) -> AppHealth:  # type: ignore[type-arg]
    return app_health(app, targets_for(app, statuses), states, None, 10.0)


def test_verdicts() -> None:
    plain = make_app()
    h = verdict(plain, [status("r1"), status("r2", phase="backoff")], {})
    assert [(r.id, r.ready) for r in h.replicas] == [("r1", True), ("r2", False)]
    assert h.replicas[1].reason == "phase backoff"

    probed = make_app({"readiness": {"http": "/healthz"}})
    h = verdict(probed, [status("r1")], {})
    assert not h.replicas[0].ready
    assert h.replicas[0].reason == "not probed yet"
    ok = {("r1", 100.0, "readiness"): ProbeState(ok=True)}
    assert verdict(probed, [status("r1")], ok).replicas[0].ready

    term = verdict(probed, [status("r1", phase="terminating")], ok).replicas[0]
    assert (term.ready, term.terminating, term.reason) == (False, True, "terminating")

    noport = verdict(plain, [status("r1", endpoints={})], {}).replicas[0]
    assert not noport.ready
    assert "no endpoint" in noport.reason


def test_exec_readiness_comes_from_the_agent() -> None:
    app = make_app({"readiness": {"exec": ["check"]}})
    assert not verdict(app, [status("r1")], {}).replicas[0].ready
    assert verdict(app, [status("r1", exec_ready=True)], {}).replicas[0].ready
    assert not verdict(app, [status("r1", exec_ready=False)], {}).replicas[0].ready


def test_liveness_failure_is_reported_for_the_incarnation() -> None:
    app = make_app({"liveness": {"http": "/healthz"}})
    dead = {("r1", 100.0, "liveness"): ProbeState(ok=False, reason="HTTP 500")}
    r = verdict(app, [status("r1")], dead).replicas[0]
    assert not r.live
    assert r.started_at == 100.0
    assert r.ready  # no readiness probe: liveness alone does not gate traffic


def test_since_is_kept_while_nothing_changes_and_same_health_ignores_ts() -> None:
    app = make_app()
    first = app_health(app, targets_for(app, [status("r1")]), {}, None, 10.0)
    second = app_health(app, targets_for(app, [status("r1")]), {}, first, 20.0)
    assert second.replicas[0].since == 10.0
    assert second.ts == 20.0
    assert same_health(first, second)
    third = app_health(app, targets_for(app, [status("r1", phase="exited")]), {}, second, 30.0)
    assert third.replicas[0].since == 30.0
    assert not same_health(second, third)


def rh(rid: str, ready: bool, **kw: object) -> ReplicaHealth:
    return ReplicaHealth.model_validate(
        {"id": rid, "revision": 1, "node": "n", "endpoint": "e:1", "ready": ready, **kw}
    )


def test_transitions() -> None:
    a = AppHealth(namespace="d", name="w", replicas=[rh("r1", False), rh("r2", True)])
    b = AppHealth(
        namespace="d",
        name="w",
        replicas=[rh("r1", True), rh("r3", False, terminating=True, live=False)],
    )
    got = {(t.replica, t.kind) for t in transitions(a, b)}
    assert got == {
        ("r1", "ready"),
        ("r3", "terminating"),
        ("r3", "liveness_failed"),
        ("r2", "gone"),
    }


def test_seed_from_a_published_verdict_only_for_the_same_container_start() -> None:
    prev = AppHealth(namespace="d", name="w", replicas=[rh("r1", True, started_at=100.0)])
    t = targets_for(make_app(), [status("r1")])[0]
    assert seeded_state(prev, t, "readiness") is True
    restarted = replace(t, started_at=200.0)
    assert seeded_state(prev, restarted, "readiness") is None
    assert seeded_state(None, t, "readiness") is None


# -- sharing -----------------------------------------------------------------------------


def test_owner_is_stable_and_moves_only_the_leavers_keys() -> None:
    keys = [AppKey("ns", f"app{i}") for i in range(300)]
    three = ["a", "b", "c"]
    before = {k: owner(k, three) for k in keys}
    assert set(before.values()) == set(three)
    assert before == {k: owner(k, list(reversed(three))) for k in keys}
    after = {k: owner(k, ["a", "c"]) for k in keys}
    for k in keys:
        if before[k] != "b":
            assert after[k] == before[k]
    share = sum(1 for v in before.values() if v == "a") / len(keys)
    assert 0.2 < share < 0.47
    assert owner(AppKey("x", "y"), []) is None


def test_owner_hashes_ns_slash_app_so_shards_survive_an_upgrade() -> None:
    # pinned: the owners the "ns/app" string keys had before keys were typed
    owners = {i: owner(AppKey("ns", f"app{i}"), ["a", "b", "c"]) for i in range(8)}
    assert owners == {0: "a", 1: "a", 2: "c", 3: "a", 4: "a", 5: "a", 6: "c", 7: "b"}


# -- the replica index -------------------------------------------------------------------


def test_replica_index_replaces_each_nodes_report() -> None:
    index = ReplicaIndex()
    web, api = AppKey("default", "web"), AppKey("default", "api")
    n1 = NodeReplicas(node="n1", replicas=[status("r1"), status("r2", app="api")])
    assert index.update("n1", n1) == {web, api}
    assert index.update("n2", NodeReplicas(node="n2", replicas=[status("r3", node="n2")])) == {web}
    assert {st.id for st in index.of(web)} == {"r1", "r3"}
    assert index.apps_on("n1") == {web, api}
    # n1 now runs only r1: api is touched (and gone), web keeps r1 and n2's r3 unchanged
    assert index.update("n1", NodeReplicas(node="n1", replicas=[status("r1")])) == {api}
    # the same report again changes nothing; a changed status touches its app only
    assert index.update("n1", NodeReplicas(node="n1", replicas=[status("r1")])) == set()
    exited = status("r1").model_copy(update={"phase": "exited"})
    assert index.update("n1", NodeReplicas(node="n1", replicas=[exited])) == {web}
    assert index.update("n1", NodeReplicas(node="n1", replicas=[status("r1")])) == {web}
    assert index.apps() == {web}
    assert list(index.of(api)) == []
    assert index.update("n2", None) == {web}
    assert [st.id for st in index.of(web)] == ["r1"]
    assert index.apps_on("n2") == set()


def test_a_replica_reported_by_two_nodes_keeps_the_latest_status() -> None:
    index = ReplicaIndex()
    web = AppKey("default", "web")
    index.update("n1", NodeReplicas(node="n1", replicas=[status("r1")]))
    index.update("n2", NodeReplicas(node="n2", replicas=[status("r1", node="n2")]))
    index.update("n1", None)  # n1's stale report goes: n2's status of r1 stays
    assert [st.node for st in index.of(web)] == ["n2"]


def test_a_replica_with_an_endpoint_off_its_nodes_address_is_no_target() -> None:
    app = make_app()
    ok = status("r1")
    forged = status("r2", endpoints={"http": "10.9.9.9:80", "admin": "127.0.0.1:9999"})
    v6 = status("r3", node="n6", endpoints={"http": "[fd00::1]:80"})
    addresses = {"n1": "127.0.0.1", "n6": "fd00::1"}
    targets = targets_for(app, [ok, forged, v6], addresses=addresses)
    assert [t.replica for t in targets] == ["r1", "r3"]
    # a node whose address is not known yet: none of its replicas
    assert targets_for(app, [ok], addresses={}) == []
    assert foreign_endpoints(forged, "127.0.0.1") == ["10.9.9.9:80"]
    assert endpoint_host("[fd00::1]:80") == "fd00::1"


def test_many_transitions_of_one_kind_are_one_event() -> None:
    from services.health.logic import EVENT_BATCH, Transition, transition_events

    few = [Transition(f"r{i}", "unready", "HTTP 500") for i in range(EVENT_BATCH)]
    events = transition_events(few)
    assert [e.replica for e in events] == [f"r{i}" for i in range(EVENT_BATCH)]
    assert events[0].message == "replica r0 unready: HTTP 500"
    assert events[0].severity == "warning"

    many = [Transition(f"r{i}", "ready", "") for i in range(20_000)]
    many.append(Transition("x", "gone", ""))
    events = transition_events(many)
    assert [(e.kind, e.replica) for e in events] == [("replica_ready", None), ("replica_gone", "x")]
    assert events[0].message == "20000 replicas ready"
    assert events[0].data["count"] == 20_000
    assert len(events[0].data["replicas"]) == 50
