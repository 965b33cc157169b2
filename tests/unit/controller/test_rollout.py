"""The rollout planner: rolling steps, readiness gating, deadlines, rollback, canaries."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.spec import AppSpec
from core.state import AppHealth, AppState, AppVersion, ReplicaStatus
from services.controller.apps import AppRecord, decide_apply, decide_promote
from services.controller.rollout import (
    IDLE_TICK,
    TICK,
    Rollout,
    failing_replicas,
    fails_for_good,
    plan_rollout,
    ready_counts,
    split_weights,
    with_template,
)
from tests.unit.controller.helpers import counts, created, health, spec


def rolling(replicas: int = 3, now: float = 0.0, **update: Any) -> AppRecord:
    old = created(spec(replicas=replicas, update=update or {"max_surge": 1}), now)
    new = spec("shoal-test/echo:v2", replicas=replicas, update=update or {"max_surge": 1})
    record = decide_apply(old, new, 2, now, "apply").record
    assert record is not None
    return record


def step(record: AppRecord, h: AppHealth | None, now: float) -> AppRecord:
    plan = plan_rollout(record.state, record.rollout, h, now)
    return AppRecord(plan.state, plan.rollout)


def run_to_end(record: AppRecord, steps: int = 50) -> list[dict[int, int]]:
    """Step with every replica ready at once; return the counts after each step."""
    seen = []
    now = 1.0
    for _ in range(steps):
        record = step(record, health(record.state), now)
        seen.append(counts(record))
        if record.rollout is None:
            return seen
        now += 1
    raise AssertionError(f"no convergence: {seen}")


@pytest.mark.parametrize(
    ("replicas", "update", "expected"),
    [
        (
            3,
            {"max_surge": 1, "max_unavailable": 0},
            [{1: 3, 2: 1}, {1: 2, 2: 2}, {1: 1, 2: 3}, {2: 3}],
        ),
        (
            4,
            {"max_surge": 2, "max_unavailable": 0},
            [{1: 4, 2: 2}, {1: 2, 2: 4}, {2: 4}],
        ),
        (
            3,
            {"max_surge": 0, "max_unavailable": 1},
            [{1: 2, 2: 1}, {1: 1, 2: 2}, {1: 0, 2: 3}, {2: 3}],
        ),
        (2, {"max_surge": 3, "max_unavailable": 0}, [{1: 2, 2: 2}, {2: 2}]),
    ],
)
def test_rolling_steps_when_every_replica_gets_ready(
    replicas: int, update: dict[str, Any], expected: list[dict[int, int]]
) -> None:
    assert run_to_end(rolling(replicas, **update)) == expected


def test_first_step_without_health_only_surges() -> None:
    record = step(rolling(3), None, 1.0)
    assert counts(record) == {1: 3, 2: 1}
    assert record.state.phase == "progressing"
    assert record.state.message == (
        "rolling out revision 2: 0/3 replica(s) of revision 2 ready, 3 old replica(s) left"
    )


def test_steps_wait_for_the_new_replicas_to_be_ready() -> None:
    record = step(rolling(3), None, 1.0)
    before = record
    record = step(record, health(record.state, ready={1: 3, 2: 0}), 2.0)
    assert counts(record) == {1: 3, 2: 1}
    assert record.state == before.state  # nothing to publish
    record = step(record, health(record.state, ready={1: 3, 2: 1}), 3.0)
    assert counts(record) == {1: 2, 2: 2}


def test_terminating_replicas_do_not_count_as_ready() -> None:
    state = rolling(3).state
    h = health(state, ready={1: 3}, terminating={1: 2})
    assert ready_counts(h) == {1: 3}


def test_completion_drops_old_versions_and_says_so() -> None:
    record = rolling(1, max_surge=1)
    plan = plan_rollout(record.state, record.rollout, None, 1.0)
    record = AppRecord(plan.state, plan.rollout)
    assert plan.rollout is not None
    plan = plan_rollout(record.state, record.rollout, health(record.state), 2.0)
    assert plan.rollout is None
    assert plan.requeue is None
    assert plan.state.phase == "stable"
    assert plan.state.message == "revision 2 rolled out"
    assert [e.message for e in plan.events] == ["default/web: revision 2 rolled out"]
    assert [(v.revision, v.replicas) for v in plan.state.versions] == [(2, 1)]


def test_an_old_revision_without_ready_replicas_is_removed_at_once() -> None:
    record = rolling(3)
    record = step(record, health(record.state, ready={1: 0}), 1.0)
    assert counts(record) == {1: 0, 2: 3}


def test_deadline_rolls_back_to_the_previous_good_revision() -> None:
    record = rolling(2, max_surge=1, progress_deadline=10)
    record = step(record, health(record.state, ready={1: 2}), 1.0)
    assert counts(record) == {1: 2, 2: 1}
    record = step(record, health(record.state, ready={1: 2, 2: 0}), 9.0)
    assert record.state.phase == "progressing"
    plan = plan_rollout(record.state, record.rollout, health(record.state, ready={1: 2}), 10.5)
    assert plan.failed_revision == 2
    assert plan.failed_reason == "revision 2 had 0/2 replicas ready after 10s"
    state = plan.state
    assert state.revision == 1
    assert state.spec.image == "shoal-test/echo:v1"
    # the never-ready revision is removed at once (it costs no availability), and with
    # revision 1 still fully ready, the rollback is complete in the same step
    assert [(e.kind, e.severity) for e in plan.events] == [
        ("rollback", "warning"),
        ("rollback", "warning"),
    ]
    assert plan.state.phase == "rolled_back"
    assert plan.state.message == (
        "rolled back to revision 1: revision 2 had 0/2 replicas ready after 10s"
    )
    assert plan.rollout is None
    assert [(v.revision, v.replicas) for v in plan.state.versions] == [(1, 2)]


def test_progress_resets_the_deadline() -> None:
    record = rolling(3, max_surge=1, progress_deadline=10)
    record = step(record, None, 1.0)
    record = step(record, health(record.state, ready={1: 3, 2: 1}), 8.0)
    assert record.rollout is not None
    assert record.rollout.progress_at == 8.0
    record = step(record, health(record.state, ready={1: 2, 2: 1}), 15.0)
    assert record.state.phase == "progressing"


def test_without_auto_rollback_a_stuck_rollout_fails_and_holds() -> None:
    record = rolling(2, max_surge=1, progress_deadline=5, auto_rollback=False)
    record = step(record, None, 1.0)
    plan = plan_rollout(record.state, record.rollout, health(record.state, ready={1: 2}), 7.0)
    assert plan.state.phase == "failed"
    assert plan.state.revision == 2
    assert plan.state.message.startswith("rollout stuck: 0/2 replica(s) of revision 2 ready")
    assert plan.events[0].severity == "error"
    assert counts(AppRecord(plan.state, plan.rollout)) == {1: 2, 2: 1}
    # no repeated error event on the next step
    again = plan_rollout(plan.state, plan.rollout, health(plan.state, ready={1: 2}), 8.0)
    assert again.events == ()
    assert not again.changed


def test_canary_then_pause_then_promote() -> None:
    old = created(spec(replicas=4))
    new = spec("shoal-test/echo:v2", replicas=4, update={"canary": 1})
    record = decide_apply(old, new, 2, 0.0, "").record
    assert record is not None
    record = step(record, None, 1.0)
    weights = {v.revision: (v.replicas, v.weight) for v in record.state.versions}
    assert weights == {1: (4, 80), 2: (1, 20)}
    assert record.state.phase == "progressing"
    record = step(record, health(record.state), 2.0)
    assert record.state.phase == "paused"
    assert record.state.message == (
        "canary: 1 replica(s) of revision 2 take 20% of traffic; promote or abort"
    )
    paused = record
    record = step(record, health(record.state), 500.0)  # paused: no deadline
    assert record.state == paused.state
    promoted = decide_promote(record, 501.0).record
    assert promoted is not None
    assert run_to_end(promoted)[-1] == {2: 4}


def test_canary_removed_from_the_spec_continues_as_a_rolling_update() -> None:
    old = created(spec(replicas=2))
    record = decide_apply(
        old, spec("shoal-test/echo:v2", replicas=2, update={"canary": 1}), 2, 0.0, ""
    ).record
    assert record is not None
    record = decide_apply(record, spec("shoal-test/echo:v2", replicas=2), 3, 1.0, "").record
    assert record is not None
    assert record.state.revision == 2  # only the update policy changed
    assert run_to_end(record)[-1] == {2: 2}


def test_split_weights() -> None:
    assert split_weights(80, [3, 1]) == [60, 20]
    assert split_weights(80, [1, 1, 1]) == [27, 27, 26]
    assert split_weights(50, [0, 0]) == [0, 0]


def test_with_template_keeps_todays_settings() -> None:
    base = spec("shoal-test/echo:v2", replicas=9, route={"host": "new.test", "port": "http"})
    old = spec("shoal-test/echo:v1", env={"A": "1"})
    mixed = with_template(base, old)
    assert (mixed.image, mixed.env, mixed.replicas) == ("shoal-test/echo:v1", {"A": "1"}, 9)
    assert mixed.route is not None
    assert mixed.route.host == "new.test"
    # an old template without the port the route needs: the old spec as a whole
    no_port = AppSpec(name="web", image="x:1", ports={"web": 80}, route={"port": "web"})
    assert with_template(base, no_port) == no_port


# -- the safety property ----------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[AppState, Rollout, AppHealth]:
    desired = draw(st.integers(0, 8))
    surge = draw(st.integers(0, 3))
    unavailable = draw(st.integers(0 if surge else 1, 3))
    n_old = draw(st.integers(1, 3))
    limit = desired + surge
    olds = []
    for _ in range(n_old):
        olds.append(draw(st.integers(0, max(0, limit - sum(olds)))))
    new = draw(st.integers(0, max(0, min(desired, limit - sum(olds)))))
    update = {"max_surge": surge, "max_unavailable": unavailable, "progress_deadline": 1000}
    base = spec(replicas=desired, update=update)
    versions = [
        AppVersion(revision=i + 1, spec=base.model_copy(update={"image": f"x:{i}"}), replicas=c)
        for i, c in enumerate(olds)
    ]
    target = n_old + 1
    versions.append(AppVersion(revision=target, spec=base, replicas=new))
    state = AppState(
        namespace="default",
        name="web",
        revision=target,
        generation=1,
        spec=base,
        replicas=desired,
        versions=versions,
        phase="progressing",
    )
    ready = {v.revision: draw(st.integers(0, v.replicas)) for v in versions}
    rollout = Rollout(from_revision=1, started=0.0, progress_at=0.0)
    return state, rollout, health(state, ready=ready)


def _counted_ready(state: AppState, h: AppHealth) -> int:
    ready = ready_counts(h)
    return sum(min(ready.get(v.revision, 0), v.replicas) for v in state.versions)


def _pessimistic_ready_after(before: AppState, after: AppState, h: AppHealth) -> int:
    """Ready replicas left if every removal picked a ready replica."""
    ready = ready_counts(h)
    new_counts = {v.revision: v.replicas for v in after.versions}
    total = 0
    for v in before.versions:
        had = min(ready.get(v.revision, 0), v.replicas)
        removed = max(0, v.replicas - new_counts.get(v.revision, 0))
        total += max(0, had - removed)
    return total


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_a_step_never_breaks_surge_or_availability(
    scenario: tuple[AppState, Rollout, AppHealth],
) -> None:
    state, rollout, h = scenario
    desired = state.replicas
    update = state.spec.update
    plan = plan_rollout(state, rollout, h, 1.0)
    total_before = sum(v.replicas for v in state.versions)
    total_after = sum(v.replicas for v in plan.state.versions)
    assert total_after <= max(desired + update.max_surge, total_before)
    ready_before = _counted_ready(state, h)
    floor = min(desired - update.max_unavailable, ready_before)
    assert _pessimistic_ready_after(state, plan.state, h) >= floor
    target = next(v for v in plan.state.versions if v.revision == plan.state.revision)
    assert target.replicas <= desired


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_rollouts_converge_when_replicas_get_ready(
    scenario: tuple[AppState, Rollout, AppHealth],
) -> None:
    state, rollout, _ = scenario
    record = AppRecord(state, rollout)
    for i in range(60):
        plan = plan_rollout(record.state, record.rollout, health(record.state), 1.0 + i)
        record = AppRecord(plan.state, plan.rollout)
        if record.rollout is None:
            break
    assert record.rollout is None
    assert record.state.phase == "stable"
    assert [(v.revision, v.replicas) for v in record.state.versions] == [
        (state.revision, state.replicas)
    ]


def _status(rid: str, revision: int, **fields: Any) -> ReplicaStatus:
    return ReplicaStatus(
        id=rid, namespace="default", app="web", revision=revision, node="n1", **fields
    )


def test_failing_replicas() -> None:
    replicas = [
        _status("b", 2, phase="backoff", restarts=3, exit_code=1),
        _status("a", 2, phase="image_pull_failed", reason="pull x:v2 failed: not found"),
        _status("c", 2, phase="running", restarts=2),
        _status("d", 1, phase="backoff", restarts=9),
    ]
    assert failing_replicas(replicas, 2) == [
        "replica a: pull x:v2 failed: not found",
        "replica b restarted 3 times, last exit code 1",
    ]
    assert failing_replicas(replicas, 3) == []


def test_a_crash_looping_revision_is_rolled_back_before_the_deadline() -> None:
    record = rolling(2, max_surge=1, progress_deadline=600)
    record = step(record, health(record.state, ready={1: 2}), 1.0)
    failing = ["replica x restarted 3 times, last exit code 1", "replica y restarted 4 times"]
    plan = plan_rollout(
        record.state, record.rollout, health(record.state, ready={1: 2}), 2.0, failing
    )
    assert plan.failed_revision == 2
    assert plan.state.revision == 1
    assert plan.state.message == (
        "rolled back to revision 1: revision 2 is failing: "
        "replica x restarted 3 times, last exit code 1 (and 1 more)"
    )


def test_a_canary_trims_old_replicas_to_the_new_desired_count() -> None:
    old = created(spec(replicas=3))
    new = spec("shoal-test/echo:v2", replicas=2, update={"canary": 1})
    record = decide_apply(old, new, 2, 0.0, "").record
    assert record is not None
    record = step(record, health(record.state), 1.0)
    weights = {v.revision: (v.replicas, v.weight) for v in record.state.versions}
    assert weights == {1: (2, 67), 2: (1, 33)}


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_without_health_nothing_is_removed(
    scenario: tuple[AppState, Rollout, AppHealth],
) -> None:
    state, rollout, _ = scenario
    plan = plan_rollout(state, rollout, None, 1.0)
    before = {v.revision: v.replicas for v in state.versions}
    for v in plan.state.versions:
        if v.revision != state.revision:
            assert v.replicas >= before.get(v.revision, 0)


def test_without_news_the_next_plan_is_when_the_deadline_can_expire() -> None:
    record = rolling(replicas=3, progress_deadline=30, max_surge=1)
    assert record.rollout is not None
    stalled = health(record.state, ready={1: 3})  # no new replica ever gets ready
    plan = plan_rollout(record.state, record.rollout, stalled, record.rollout.progress_at)
    assert plan.requeue == IDLE_TICK  # 30 s to go: looked at again within IDLE_TICK
    late = record.rollout.progress_at + 29.5
    plan = plan_rollout(record.state, record.rollout, stalled, late)
    assert plan.requeue is not None
    assert TICK <= plan.requeue < IDLE_TICK
    expired = plan_rollout(record.state, record.rollout, stalled, late + plan.requeue)
    assert expired.failed_revision == 2  # the deadline expired: rolled back


def test_failing_for_good_is_a_crash_loop_or_an_image_that_cannot_be_pulled() -> None:
    def status(rid: str, **kw: Any) -> ReplicaStatus:
        base: dict[str, Any] = {"id": rid, "namespace": "default", "app": "web", "revision": 2}
        return ReplicaStatus(**(base | {"node": "n1", "phase": "running"} | kw))

    healthy = [status("a"), status("b", restarts=1), status("c", phase="pulling")]
    assert not any(fails_for_good(r) for r in healthy)
    assert failing_replicas(healthy, 2) == []
    looping = status("d", restarts=3, exit_code=1)
    pulled = status("e", phase="image_pull_failed", reason="no such image")
    assert fails_for_good(looping)
    assert fails_for_good(pulled)
    assert failing_replicas([*healthy, pulled, looping], 2) == [
        "replica d restarted 3 times, last exit code 1",
        "replica e: no such image",
    ]
    assert failing_replicas([looping], 1) == []  # another revision's
