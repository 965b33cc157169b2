"""Command decisions: revisions, in-place updates, scale rules, undo, promote and abort."""

from __future__ import annotations

from typing import Any

import pytest

from core.commands import ScaleCommand
from core.errors import SpecError
from services.controller.apps import (
    AppRecord,
    decide_abort,
    decide_apply,
    decide_promote,
    decide_scale,
    decide_undo,
    effective_replicas,
)
from services.controller.rollout import plan_rollout
from tests.unit.controller.helpers import counts, created, health, spec

AUTOSCALE = {"min": 2, "max": 6, "target": {"rps_per_replica": 50}}


def test_create_makes_revision_1_stable() -> None:
    decision = decide_apply(None, spec(), 1, 10.0, "apply web.yaml")
    assert decision.change == "created"
    assert decision.revision is not None
    assert decision.revision.revision == 1
    assert decision.revision.source == "apply web.yaml"
    assert decision.record is not None
    state = decision.record.state
    assert (state.revision, state.generation, state.replicas, state.phase) == (1, 1, 3, "stable")
    assert [(v.revision, v.replicas) for v in state.versions] == [(1, 3)]
    assert decision.record.rollout is None


@pytest.mark.parametrize(
    ("fields", "change", "revision", "diff"),
    [
        ({}, "unchanged", 1, []),
        ({"replicas": 5}, "scaled", 1, ["replicas: 3 -> 5"]),
        (
            {"route": {"host": "new.test", "port": "http"}},
            "updated",
            1,
            ["route.host: web.test -> new.test"],
        ),
        ({"update": {"max_surge": 2}}, "updated", 1, ["update.max_surge: 1 -> 2"]),
        (
            {"image": "shoal-test/echo:v2"},
            "updated",
            2,
            ["image: shoal-test/echo:v1 -> shoal-test/echo:v2"],
        ),
    ],
)
def test_apply_to_an_existing_app(
    fields: dict[str, Any], change: str, revision: int, diff: list[str]
) -> None:
    current = created()
    decision = decide_apply(current, spec(**fields), 2, 20.0, "apply")
    assert decision.change == change
    assert decision.changes == diff
    assert decision.record is not None
    state = decision.record.state
    assert state.revision == revision
    if change == "unchanged":
        assert decision.record is current
    else:
        assert state.generation == 2
    assert (decision.revision is not None) is (revision == 2)


def test_in_place_update_moves_the_replica_count_of_a_stable_app() -> None:
    decision = decide_apply(created(), spec(replicas=5), 2, 1.0, "")
    assert decision.record is not None
    assert counts(decision.record) == {1: 5}
    assert decision.record.state.versions[0].spec.replicas == 5


def test_template_change_starts_a_rollout_from_the_current_revision() -> None:
    decision = decide_apply(created(), spec("shoal-test/echo:v2"), 2, 5.0, "apply")
    record = decision.record
    assert record is not None
    assert record.state.phase == "progressing"
    assert counts(record) == {1: 3, 2: 0}
    assert record.rollout is not None
    assert record.rollout.from_revision == 1
    assert record.rollout.progress_at == 5.0
    assert not record.rollout.canary


def test_a_second_update_mid_rollout_keeps_the_last_good_revision() -> None:
    first = decide_apply(created(), spec("shoal-test/echo:v2"), 2, 1.0, "").record
    assert first is not None
    second = decide_apply(first, spec("shoal-test/echo:v3"), 3, 2.0, "").record
    assert second is not None
    assert second.rollout is not None
    assert second.rollout.from_revision == 1
    # revision 2 had no replica yet: dropped; revision 1 (the good one) stays
    assert counts(second) == {1: 3, 3: 0}


@pytest.mark.parametrize(
    ("spec_replicas", "current", "expected"),
    [(4, None, 4), (1, None, 2), (9, None, 6), (4, 5, 5), (4, 1, 2), (4, 10, 6)],
)
def test_effective_replicas_with_autoscale(
    spec_replicas: int, current: int | None, expected: int
) -> None:
    s = spec(replicas=spec_replicas, autoscale=AUTOSCALE)
    assert effective_replicas(s, current) == expected


def test_apply_keeps_the_autoscaled_count() -> None:
    current = created(spec(replicas=2, autoscale=AUTOSCALE))
    scaled = decide_scale(
        current, ScaleCommand(name="web", replicas=5, source="autoscaler"), 1.0
    ).record
    assert scaled is not None
    again = decide_apply(scaled, spec(replicas=2, autoscale=AUTOSCALE), 2, 2.0, "")
    assert again.change == "unchanged"
    assert again.record is not None
    assert again.record.state.replicas == 5


@pytest.mark.parametrize(
    ("autoscale", "source", "replicas", "error"),
    [
        (
            None,
            "autoscaler",
            4,
            "app default/web has no autoscale; the autoscaler may not scale it",
        ),
        (
            AUTOSCALE,
            "manual",
            9,
            "app default/web autoscales between 2 and 6 replicas: cannot scale to 9 "
            "(change autoscale in the spec)",
        ),
        (
            AUTOSCALE,
            "autoscaler",
            1,
            "app default/web autoscales between 2 and 6 replicas: cannot scale to 1 "
            "(change autoscale in the spec)",
        ),
    ],
)
def test_scale_refusals(
    autoscale: dict[str, Any] | None, source: str, replicas: int, error: str
) -> None:
    current = created(spec(autoscale=autoscale) if autoscale else spec())
    command = ScaleCommand(name="web", replicas=replicas, source=source)  # type: ignore[arg-type]
    with pytest.raises(SpecError) as info:
        decide_scale(current, command, 1.0)
    assert info.value.errors == [error]


@pytest.mark.parametrize(
    ("autoscale", "source", "replicas", "change"),
    [
        (None, "manual", 5, "scaled"),
        (None, "manual", 3, "unchanged"),
        (AUTOSCALE, "manual", 4, "scaled"),
        (AUTOSCALE, "autoscaler", 6, "scaled"),
    ],
)
def test_scale(autoscale: dict[str, Any] | None, source: str, replicas: int, change: str) -> None:
    current = created(spec(replicas=3, autoscale=autoscale) if autoscale else spec())
    command = ScaleCommand(name="web", replicas=replicas, source=source)  # type: ignore[arg-type]
    decision = decide_scale(current, command, 1.0)
    assert decision.change == change
    assert decision.record is not None
    assert decision.record.state.revision == 1
    assert counts(decision.record) == {1: replicas}
    assert decision.record.state.spec.replicas == replicas


def test_scale_during_a_rollout_leaves_counts_to_the_planner() -> None:
    rolling = decide_apply(created(), spec("shoal-test/echo:v2"), 2, 1.0, "").record
    assert rolling is not None
    scaled = decide_scale(rolling, ScaleCommand(name="web", replicas=5), 2.0).record
    assert scaled is not None
    assert scaled.state.replicas == 5
    assert counts(scaled) == {1: 3, 2: 0}
    plan = plan_rollout(scaled.state, scaled.rollout, health(scaled.state), 3.0)
    assert plan.state.versions[-1].replicas == 3  # up to desired 5 + surge 1 - 3 old


def test_undo_makes_a_new_revision_with_the_old_template() -> None:
    v1 = spec()
    rolled = decide_apply(created(v1), spec("shoal-test/echo:v2", replicas=4), 2, 1.0, "")
    assert rolled.record is not None
    stable = AppRecord(
        rolled.record.state.model_copy(
            update={
                "versions": [rolled.record.state.versions[-1].model_copy(update={"replicas": 4})],
                "phase": "stable",
            }
        ),
        None,
    )
    decision = decide_undo(stable, 1, v1, 3, 2.0, "cli")
    assert decision.change == "updated"
    assert decision.revision is not None
    assert decision.revision.revision == 3
    assert decision.revision.source == "undo to revision 1 by cli"
    assert decision.record is not None
    state = decision.record.state
    assert state.revision == 3
    assert state.spec.image == "shoal-test/echo:v1"
    assert state.replicas == 4  # today's count, the old template
    assert decision.changes == ["image: shoal-test/echo:v2 -> shoal-test/echo:v1"]


def test_undo_to_the_same_template_changes_nothing() -> None:
    current = created()
    assert decide_undo(current, 1, spec(), 2, 1.0, "").change == "unchanged"


def test_promote_and_abort_need_a_rollout() -> None:
    current = created()
    with pytest.raises(SpecError, match="has no canary to promote"):
        decide_promote(current, 1.0)
    with pytest.raises(SpecError, match="has no rollout in progress to abort"):
        decide_abort(current, 1.0)


def test_canary_promote_and_abort() -> None:
    canary = spec("shoal-test/echo:v2", replicas=4, update={"canary": 1})
    record = decide_apply(created(spec(replicas=4)), canary, 2, 1.0, "").record
    assert record is not None
    assert record.rollout is not None
    assert record.rollout.canary

    promoted = decide_promote(record, 2.0).record
    assert promoted is not None
    assert promoted.rollout is not None
    assert not promoted.rollout.canary
    assert promoted.state.phase == "progressing"

    aborted = decide_abort(record, 2.0, "cli").record
    assert aborted is not None
    assert aborted.state.revision == 1
    assert aborted.state.spec.image == "shoal-test/echo:v1"
    assert aborted.state.phase == "rolling_back"
    assert aborted.rollout is not None
    assert aborted.rollout.rollback_of == 2
    assert aborted.state.message == (
        "rolled back to revision 1: canary of revision 2 aborted by cli"
    )


def test_reapplying_the_rolled_back_revision_settles_the_app() -> None:
    current = created()
    rolled = AppRecord(
        current.state.model_copy(update={"phase": "rolled_back", "message": "rolled back: x"}),
        None,
    )
    decision = decide_apply(rolled, spec(), 2, 1.0, "")
    assert decision.change == "unchanged"
    assert decision.record is not None
    assert (decision.record.state.phase, decision.record.state.message) == ("stable", "")
    assert decision.record.state.generation == 2
