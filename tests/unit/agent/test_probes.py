"""Probe decisions of the agent: liveness restarts, the exec probe state machine,
schedule and verdicts. Pure: no broker, no Docker."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.probes import ProbeState, step
from core.spec import AppSpec, Probe
from core.state import AppHealth, AssignedReplica, NodeAssignment, NodeReplicas, ReplicaHealth
from services.agent.containers import Container
from services.agent.plan import ReplicaRecord, Snapshot, node_replicas
from services.agent.probes import (
    ExecTarget,
    NotLive,
    exec_result,
    exec_targets,
    exec_verdict,
    liveness_failed,
    liveness_restarts,
    next_probe_at,
    not_live,
    prune_done,
    seeded_readiness,
)

NOW = 1000.0
STARTED = NOW - 100
SPEC = AppSpec(name="web", image="img", ports={"http": 8080})
EXEC_SPEC = AppSpec.model_validate(
    {
        "name": "web",
        "image": "img",
        "ports": {"http": 8080},
        "health": {
            "readiness": {"exec": ["test", "-f", "/tmp/ready"], "interval": "500ms"},
            "liveness": {"exec": ["true"], "initial_delay": "2s", "failures": 2},
        },
    }
)


def rep(i: int, revision: int = 1) -> AssignedReplica:
    return AssignedReplica(
        id=f"default.web.{i:08x}", namespace="default", app="web", revision=revision
    )


def assign(*replicas: AssignedReplica, spec: AppSpec = SPEC) -> NodeAssignment:
    return NodeAssignment(
        node="n1", replicas=list(replicas), specs={r.spec_key: spec for r in replicas}
    )


def box(r: AssignedReplica, state: str = "running", **kw: object) -> Container:
    fields: dict[str, object] = {
        "id": f"c-{r.id}",
        "replica": r.id,
        "namespace": r.namespace,
        "app": r.app,
        "revision": r.revision,
        "state": state,
        "started_at": STARTED,
        "host_ports": ((8080, 32000),),
        "port_names": (("http", 8080),),
    }
    fields.update(kw)
    return Container(**fields)  # type: ignore[arg-type]


def verdict(
    r: AssignedReplica,
    *,
    live: bool = False,
    node: str = "n1",
    started_at: float | None = STARTED,
    **kw: object,
) -> ReplicaHealth:
    return ReplicaHealth(
        id=r.id,
        revision=r.revision,
        node=node,
        endpoint="127.0.0.2:32000",
        ready=live,
        live=live,
        started_at=started_at,
        reason="" if live else "liveness: HTTP 404",
        **kw,
    )


def health(*replicas: ReplicaHealth) -> AppHealth:
    return AppHealth(namespace="default", name="web", replicas=list(replicas))


def decide(
    h: AppHealth,
    a: NodeAssignment,
    containers: list[Container],
    *,
    busy: frozenset[str] = frozenset(),
    done: frozenset[tuple[str, float]] = frozenset(),
) -> list[str]:
    out = liveness_restarts(
        not_live([h], "n1"), assignment=a, containers=containers, busy=busy, done=done
    )
    return [x.replica.id for x in out]


# -- liveness restarts ordered by the health monitor -----------------------------------


def test_a_not_live_verdict_about_the_current_start_restarts_it() -> None:
    a, b = rep(1), rep(2)
    out = liveness_restarts(
        not_live([health(verdict(a), verdict(b, live=True))], "n1"),
        assignment=assign(a, b),
        containers=[box(a), box(b)],
        busy=set(),
        done=set(),
    )
    assert [(x.replica, x.container.id, x.verdict.started_at) for x in out] == [
        (a, f"c-{a.id}", STARTED)
    ]
    assert out[0].verdict.reason == "liveness: HTTP 404"
    assert out[0].verdict.source == "health"


def test_a_stale_verdict_about_a_previous_start_is_ignored() -> None:
    a = rep(1)
    restarted = box(a, started_at=STARTED + 30)
    assert decide(health(verdict(a)), assign(a), [restarted]) == []


def test_a_verdict_for_another_node_is_ignored() -> None:
    """Several agents may run replicas with the same ids layout; only ``node`` decides."""
    a = rep(1)
    assert decide(health(verdict(a, node="n2")), assign(a), [box(a)]) == []


def test_one_restart_per_verdict() -> None:
    a = rep(1)
    h, asg, containers = health(verdict(a)), assign(a), [box(a)]
    assert decide(h, asg, containers) == [a.id]
    # The same verdict seen again (re-published, resync, before the refresh) does nothing.
    assert decide(h, asg, containers, done=frozenset({(a.id, STARTED)})) == []


def test_the_new_start_can_be_restarted_by_a_new_verdict() -> None:
    a = rep(1)
    done = frozenset({(a.id, STARTED)})
    later = STARTED + 30
    new = decide(
        health(verdict(a, started_at=later)), assign(a), [box(a, started_at=later)], done=done
    )
    assert new == [a.id]


@pytest.mark.parametrize(
    "case",
    ["live", "no_started_at", "terminating", "exited", "unassigned", "other_revision", "busy"],
)
def test_no_restart_when(case: str) -> None:
    a = rep(1)
    v, asg, containers, busy = verdict(a), assign(a), [box(a)], frozenset[str]()
    if case == "live":
        v = verdict(a, live=True)
    elif case == "no_started_at":
        v = verdict(a, started_at=None)
    elif case == "terminating":
        v = verdict(a, terminating=True)
    elif case == "exited":
        containers = [box(a, state="exited")]  # the agent's exit restart handles it
    elif case == "unassigned":
        asg = assign(rep(2))
    elif case == "other_revision":
        v = v.model_copy(update={"revision": 2})
    elif case == "busy":
        busy = frozenset({a.id})
    assert decide(health(v), asg, containers, busy=busy) == []


def test_exec_and_health_verdicts_for_one_replica_give_one_restart() -> None:
    a = rep(1)
    exec_v = NotLive(a.id, 1, STARTED, "exec probe: exited 1", "exec")
    out = liveness_restarts(
        [*not_live([health(verdict(a))], "n1"), exec_v],
        assignment=assign(a),
        containers=[box(a)],
        busy=set(),
        done=set(),
    )
    assert len(out) == 1


def test_prune_done_forgets_starts_that_are_gone() -> None:
    a, b = rep(1), rep(2)
    done = {(a.id, STARTED), (b.id, STARTED)}
    assert prune_done(done, [box(a), box(b, started_at=STARTED + 5)]) == {(a.id, STARTED)}


# -- exec probes: what runs where ------------------------------------------------------


def test_exec_targets_cover_running_containers_with_exec_probes() -> None:
    a, b, c = rep(1), rep(2), rep(3)
    asg = assign(a, b, c, spec=EXEC_SPEC)
    targets = exec_targets(asg, [box(a), box(b, state="exited"), box(c, state="created")])
    assert set(targets) == {(a.id, "readiness"), (a.id, "liveness")}
    t = targets[(a.id, "readiness")]
    assert (t.container_id, t.started_at, t.command) == (
        f"c-{a.id}",
        STARTED,
        ["test", "-f", "/tmp/ready"],
    )


def test_no_exec_targets_for_http_probes_or_unknown_assignment() -> None:
    a = rep(1)
    http = SPEC.model_copy(
        update={"health": EXEC_SPEC.health.model_copy(update={"readiness": Probe(http="/")})}
    )
    assert set(exec_targets(assign(a, spec=http), [box(a)])) == {(a.id, "liveness")}
    assert exec_targets(None, [box(a)]) == {}


def test_a_restart_makes_a_different_target() -> None:
    """Probe state belongs to one container start: a new start_at is a new target."""
    a = rep(1)
    asg = assign(a, spec=EXEC_SPEC)
    before = exec_targets(asg, [box(a)])[(a.id, "liveness")]
    after = exec_targets(asg, [box(a, started_at=STARTED + 10)])[(a.id, "liveness")]
    assert before != after


def test_schedule_initial_delay_from_the_start_then_interval() -> None:
    a = rep(1)
    t = exec_targets(assign(a, spec=EXEC_SPEC), [box(a)])
    live, ready = t[(a.id, "liveness")], t[(a.id, "readiness")]
    assert next_probe_at(live, None) == STARTED + 2.0
    assert next_probe_at(live, STARTED + 2.0) == STARTED + 3.0
    assert next_probe_at(ready, None) == STARTED
    assert next_probe_at(ready, STARTED + 4.0) == STARTED + 4.5


# -- exec probes: the state machine ----------------------------------------------------

PROBE = Probe(exec=["true"], failures=3, successes=2)


def feed(state: ProbeState, results: str, probe: Probe = PROBE) -> ProbeState:
    for i, r in enumerate(results):
        state = step(state, probe, r == "+", "boom" if r == "-" else "", NOW + i)
    return state


def test_readiness_starts_without_a_verdict_and_needs_successes() -> None:
    s = ProbeState.initial("readiness", NOW)
    assert exec_verdict(s) is None
    s = feed(s, "+")
    assert exec_verdict(s) is False  # one success of two: a verdict, not ready yet
    s = feed(s, "+")
    assert exec_verdict(s) is True


def test_readiness_needs_consecutive_failures_to_drop() -> None:
    s = feed(ProbeState.initial("readiness", NOW), "++")
    assert feed(s, "--").ok
    assert feed(s, "--+--").ok  # a success in between resets the count
    dropped = feed(s, "---")
    assert not dropped.ok
    assert dropped.reason == "boom"
    assert not feed(dropped, "+").ok
    assert feed(dropped, "++").ok


def test_liveness_starts_alive_and_fails_once_at_the_threshold() -> None:
    s = ProbeState.initial("liveness", NOW)
    assert s.ok
    flips = []
    for r in "+--+---" + "-":
        nxt = step(s, PROBE, r == "+", "boom", NOW)
        flips.append(liveness_failed(s, nxt))
        s = nxt
    assert flips == [False, False, False, False, False, False, True, False]


@given(st.lists(st.booleans(), max_size=30), st.integers(1, 4), st.integers(1, 4))
def test_ok_matches_the_last_threshold_run(
    results: list[bool], failures: int, successes: int
) -> None:
    """``ok`` is decided by the last run of equal results that reached its threshold."""
    probe = Probe(exec=["true"], failures=failures, successes=successes)
    s = ProbeState.initial("readiness", NOW)
    for r in results:
        s = step(s, probe, r, "x", NOW)
    ok = False
    run, last = 0, None
    for r in results:
        run = run + 1 if r == last else 1
        last = r
        if r and run >= successes:
            ok = True
        elif not r and run >= failures:
            ok = False
    assert s.ok == ok
    assert s.results == len(results)


def test_exec_result() -> None:
    assert exec_result(0, "anything") == (True, "")
    assert exec_result(1, "") == (False, "exec probe exited 1")
    ok, reason = exec_result(2, "no\nsuch   file\n")
    assert (ok, reason) == (False, "exec probe exited 2: no such file")
    assert exec_result(None, "")[0] is False
    assert len(exec_result(1, "x" * 10_000)[1]) < 260


# -- the reported exec readiness -------------------------------------------------------


def test_exec_ready_is_reported_only_for_the_current_start() -> None:
    a = rep(1)
    record = ReplicaRecord(exec_ready=(STARTED, True))
    snap = Snapshot("n1", "127.0.0.2", assign(a, spec=EXEC_SPEC), [box(a)], {a.id: record})
    assert node_replicas(snap, NOW).replicas[0].exec_ready is True
    restarted = replace(snap, containers=[box(a, started_at=STARTED + 5)])
    assert node_replicas(restarted, NOW).replicas[0].exec_ready is None
    stopped = replace(snap, containers=[box(a, state="exited")])
    assert node_replicas(stopped, NOW).replicas[0].exec_ready is None
    no_verdict = replace(snap, records={a.id: ReplicaRecord()})
    assert node_replicas(no_verdict, NOW).replicas[0].exec_ready is None


def test_exec_target_key() -> None:
    a = rep(1)
    t = ExecTarget(a, "readiness", "c", STARTED, PROBE)
    assert t.key == (a.id, "readiness")


def test_an_agent_restart_continues_from_its_reported_verdict() -> None:
    """Seeded from the retained report, for the same container start only."""
    a = rep(1)
    asg = assign(a, spec=EXEC_SPEC)
    record = ReplicaRecord(exec_ready=(STARTED, True))
    previous = node_replicas(Snapshot("n1", "127.0.0.2", asg, [box(a)], {a.id: record}), NOW)
    targets = exec_targets(asg, [box(a)])
    assert seeded_readiness(previous, targets[(a.id, "readiness")]) is True
    assert seeded_readiness(previous, targets[(a.id, "liveness")]) is None
    assert seeded_readiness(None, targets[(a.id, "readiness")]) is None
    restarted = exec_targets(asg, [box(a, started_at=STARTED + 1)])[(a.id, "readiness")]
    assert seeded_readiness(previous, restarted) is None
    assert seeded_readiness(NodeReplicas(node="n1"), restarted) is None

    seeded = ProbeState.initial("readiness", NOW, seeded=True)
    assert exec_verdict(seeded) is True
    assert exec_verdict(feed(seeded, "---")) is False
    assert exec_verdict(ProbeState.initial("readiness", NOW, seeded=False)) is False
