"""The reconcile diff, restart back-off and observed state: pure decisions."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from core.spec import AppSpec
from core.state import AssignedReplica, NodeAssignment
from services.agent.containers import Container
from services.agent.plan import (
    ReplicaRecord,
    RestartPolicy,
    Snapshot,
    node_replicas,
    on_exit,
    plan,
    replica_phase,
    retry_delay,
)

SPEC = AppSpec(name="web", image="img", ports={"http": 8080})
NOW = 1000.0


def rep(i: int, revision: int = 1) -> AssignedReplica:
    return AssignedReplica(
        id=f"default.web.{i:08x}", namespace="default", app="web", revision=revision
    )


def assign(*replicas: AssignedReplica) -> NodeAssignment:
    specs = {r.spec_key: SPEC for r in replicas}
    return NodeAssignment(node="n1", replicas=list(replicas), specs=specs)


def box(
    r: AssignedReplica, state: str = "running", cid: str | None = None, **kw: object
) -> Container:
    fields: dict[str, object] = {
        "id": cid or f"c-{r.id}",
        "replica": r.id,
        "namespace": r.namespace,
        "app": r.app,
        "revision": r.revision,
        "state": state,
        "started_at": NOW - 100,
        "host_ports": ((8080, 32000),),
        "port_names": (("http", 8080),),
    }
    if state == "exited":
        fields.update(exit_code=1, finished_at=NOW - 1)
    fields.update(kw)
    return Container(**fields)  # type: ignore[arg-type]


def test_creates_missing_and_keeps_running() -> None:
    a, b = rep(1), rep(2)
    p = plan(assign(a, b), [box(a)], {}, set(), NOW)
    assert p.create == (b,)
    assert p.start == ()
    assert p.remove == ()


def test_unknown_assignment_removes_nothing() -> None:
    """A fresh agent must not take its replicas for orphans before the assignment arrives."""
    p = plan(None, [box(rep(1)), box(rep(2), "exited")], {}, set(), NOW)
    assert p.empty


def test_orphans_are_removed_gracefully_when_running() -> None:
    a, b, c = rep(1), rep(2), rep(3)
    p = plan(assign(a), [box(a), box(b), box(c, "exited")], {}, set(), NOW)
    removed = {(r.container.replica, r.graceful) for r in p.remove}
    assert removed == {(b.id, True), (c.id, False)}


def test_busy_replicas_are_left_alone() -> None:
    a, b = rep(1), rep(2)
    p = plan(assign(a), [box(b)], {}, {a.id, b.id}, NOW)
    assert p.empty


def test_duplicates_keep_the_running_one() -> None:
    a = rep(1)
    keep, dup = box(a, cid="x1"), box(a, "created", cid="x2")
    p = plan(assign(a), [dup, keep], {}, set(), NOW)
    assert [(r.container.id, r.graceful) for r in p.remove] == [("x2", False)]
    assert p.create == ()
    assert p.start == ()


def test_new_revision_replaces_old_container_first() -> None:
    old, new = rep(1, revision=1), rep(1, revision=2)
    p = plan(assign(new), [box(old)], {}, set(), NOW)
    assert [r.why for r in p.remove] == ["revision 1 replaced"]
    assert p.create == ()  # created once the old one is gone
    p2 = plan(assign(new), [], {}, set(), NOW)
    assert p2.create == (new,)


def test_created_container_is_started() -> None:
    a = rep(1)
    c = box(a, "created")
    assert plan(assign(a), [c], {}, set(), NOW).start == ((a, c),)


def test_exited_container_waits_for_its_backoff() -> None:
    a = rep(1)
    c = box(a, "exited")
    record = ReplicaRecord()
    policy = RestartPolicy(initial=0.5, cap=4, reset_after=10)
    assert on_exit(record, c, NOW, policy)
    assert not on_exit(record, c, NOW, policy)  # the same exit counts once
    p = plan(assign(a), [c], {a.id: record}, set(), NOW)
    assert p.start == ()
    assert p.wake_in == 0.5
    p = plan(assign(a), [c], {a.id: record}, set(), NOW + 0.5)
    assert p.start == ((a, c),)


def test_exited_container_without_record_waits_for_accounting() -> None:
    a = rep(1)
    assert plan(assign(a), [box(a, "exited")], {}, set(), NOW).empty


def test_backoff_doubles_caps_and_resets_after_a_long_run() -> None:
    policy = RestartPolicy(initial=0.25, cap=1.0, reset_after=10)
    record = ReplicaRecord()
    delays = []
    for i in range(5):
        c = box(rep(1), "exited", started_at=NOW + i, finished_at=NOW + i + 1)
        on_exit(record, c, NOW + i + 1, policy)
        delays.append(round(record.restart_at - (NOW + i + 1), 3))  # type: ignore[operator]
    assert delays == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert replica_phase(c, record) == "backoff"
    long_run = box(rep(1), "exited", cid="y", started_at=NOW, finished_at=NOW + 60)
    on_exit(record, long_run, NOW + 60, policy)
    assert record.restart_at == NOW + 60 + 0.25
    assert record.attempts == 1
    assert replica_phase(long_run, record) == "exited"


def test_a_replica_that_served_before_it_exited_is_not_in_a_crash_loop() -> None:
    """Killed again and again after being found ready, it comes back after the initial
    delay every time; a start that was never ready still backs off."""
    policy = RestartPolicy(initial=0.25, cap=30.0, reset_after=10)
    record = ReplicaRecord()
    for i in range(6):
        started = NOW + 3 * i
        record.served = started  # the health monitor found this start ready
        c = box(rep(1), "exited", cid=f"c{i}", started_at=started, finished_at=started + 3)
        on_exit(record, c, started + 3, policy)
        assert record.restart_at == started + 3 + 0.25
        assert replica_phase(c, record) == "exited"
    never_ready = box(rep(1), "exited", cid="x", started_at=NOW + 30, finished_at=NOW + 31)
    on_exit(record, never_ready, NOW + 31, policy)  # served names an older start
    assert record.restart_at == NOW + 31 + 0.5
    assert replica_phase(never_ready, record) == "backoff"


def test_failed_action_waits_for_retry() -> None:
    a = rep(1)
    record = ReplicaRecord(hint="image_pull_failed", hint_reason="denied", retry_at=NOW + 2)
    p = plan(assign(a), [], {a.id: record}, set(), NOW)
    assert p.empty
    assert p.wake_in == 2
    assert plan(assign(a), [], {a.id: record}, set(), NOW + 2).create == (a,)
    assert [retry_delay(n) for n in (1, 2, 3, 10)] == [1, 2, 4, 60]


def test_observed_state() -> None:
    a, b, c, d = rep(1), rep(2), rep(3), rep(4)
    records = {
        b.id: ReplicaRecord(hint="image_pull_failed", hint_reason="unauthorized"),
        c.id: ReplicaRecord(restarts=2, attempts=1, exit_code=137, reason="OOMKilled"),
    }
    orphan = box(rep(9))
    snap = Snapshot(
        node="n1",
        address="127.0.0.2",
        assignment=assign(a, b, c, d),
        containers=[box(a), box(c, "exited", exit_code=137, oom_killed=True), orphan],
        records=records,
    )
    report = node_replicas(snap, NOW)
    by_id = {s.id: s for s in report.replicas}
    assert by_id[a.id].phase == "running"
    assert by_id[a.id].endpoints == {"http": "127.0.0.2:32000"}
    assert (by_id[b.id].phase, by_id[b.id].reason) == ("image_pull_failed", "unauthorized")
    assert (by_id[c.id].phase, by_id[c.id].exit_code, by_id[c.id].reason) == (
        "exited",
        137,
        "OOMKilled",
    )
    assert by_id[c.id].restarts == 2
    assert by_id[c.id].endpoints == {}
    assert by_id[d.id].phase == "pending"
    assert by_id[orphan.replica].phase == "terminating"
    assert by_id[orphan.replica].endpoints == {"http": "127.0.0.2:32000"}


# -- properties --------------------------------------------------------------------------

STATES = st.sampled_from(["running", "created", "exited"])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[NodeAssignment, list[Container]]:
    assigned = draw(st.sets(st.integers(0, 12), max_size=8))
    present = draw(st.lists(st.tuples(st.integers(0, 12), st.integers(1, 2), STATES), max_size=12))
    replicas = [rep(i) for i in sorted(assigned)]
    containers = [
        box(rep(i, revision), state, cid=f"c{n}") for n, (i, revision, state) in enumerate(present)
    ]
    return assign(*replicas), containers


def apply(
    p_create: tuple[AssignedReplica, ...], containers: list[Container], p: object
) -> list[Container]:
    from services.agent.plan import Plan

    assert isinstance(p, Plan)
    removed = {r.container.id for r in p.remove}
    started = {c.id for _, c in p.start}
    out = [
        replace(c, state="running") if c.id in started else c
        for c in containers
        if c.id not in removed
    ]
    out += [box(r, cid=f"new-{r.id}") for r in p_create]
    return out


@given(worlds())
def test_converges_in_a_few_rounds_and_never_over_creates(
    world: tuple[NodeAssignment, list[Container]],
) -> None:
    assignment, containers = world
    records: dict[str, ReplicaRecord] = {}
    for _ in range(3):
        for c in containers:
            if c.exited:
                records.setdefault(c.replica, ReplicaRecord())
        p = plan(assignment, containers, records, set(), NOW + 100)
        have = {c.replica for c in containers if c.revision == 1}
        assert not {r.id for r in p.create} & have  # never a duplicate
        assert len(p.create) <= len(assignment.replicas)
        containers = apply(p.create, containers, p)
    final = plan(assignment, containers, records, set(), NOW + 100)
    assert final.empty
    assigned = {r.id for r in assignment.replicas}
    assert {c.replica for c in containers} == assigned
    assert all(c.running for c in containers)
    assert len(containers) == len(assigned)


def test_restart_counters_survive_an_agent_restart_through_its_last_report() -> None:
    from core.state import NodeReplicas, ReplicaStatus
    from services.agent.plan import remembered

    def status(rid: str, restarts: int, exit_code: int | None) -> ReplicaStatus:
        return ReplicaStatus(
            id=rid,
            namespace="default",
            app="web",
            revision=1,
            node="n1",
            phase="running",
            restarts=restarts,
            exit_code=exit_code,
        )

    report = NodeReplicas(node="n1", replicas=[status("a", 3, 137), status("b", 0, None)])
    records = remembered(report, "n1", 5.0)
    assert set(records) == {"a"}
    assert (records["a"].restarts, records["a"].exit_code) == (3, 137)
    assert remembered(report, "n2", 5.0) == {}
    assert remembered(None, "n1", 5.0) == {}


def test_liveness_restarts_back_off_like_a_crash_loop() -> None:
    from services.agent.plan import ReplicaRecord, RestartPolicy, on_liveness_restart

    policy = RestartPolicy(initial=0.25, factor=2.0, cap=30.0, reset_after=10.0)
    record = ReplicaRecord()
    waits = []
    for now in (100.0, 103.0, 106.0, 109.0):
        on_liveness_restart(record, ran_for=3.0, now=now, policy=policy)
        assert record.next_liveness_restart is not None
        waits.append(record.next_liveness_restart - now)
    assert waits == [0.25, 0.5, 1.0, 2.0]
    on_liveness_restart(record, ran_for=60.0, now=200.0, policy=policy)  # ran long: forgiven
    assert record.next_liveness_restart == 200.25
