"""The ``depends_on`` gate: the pure decision, and the cluster holding an app by it."""

from __future__ import annotations

from typing import Any

import pytest

from core.keys import AppKey
from core.spec import AppSpec, Dependency
from core.state import AppState
from services.scheduler.cluster import Cluster
from services.scheduler.depends import DependencyState, held_message, waiting_for
from tests.unit.scheduler.helpers import app_state, node_info

API = AppKey("default", "api")
DB = AppKey("default", "db")


def spec(*depends: dict[str, str]) -> AppSpec:
    return AppSpec(name="api", image="img:1", depends_on=list(depends))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("condition", "state", "reasons"),
    [
        ("started", DependencyState(desired=2, placed=2, ready=0), []),
        ("started", DependencyState(2, 1, 0), ["db to be started (1/2 placed)"]),
        ("started", DependencyState(0, 0, 0), ["db to be started (0/0 placed)"]),
        ("healthy", DependencyState(2, 2, 2), []),
        ("healthy", DependencyState(2, 2, 1), ["db to be healthy (1/2 ready)"]),
        ("healthy", DependencyState(0, 0, 0), ["db to be healthy (0/0 ready)"]),
    ],
)
def test_conditions(condition: str, state: DependencyState, reasons: list[str]) -> None:
    assert waiting_for(spec({"app": "db", "condition": condition}), False, {"db": state}) == reasons


def test_a_started_app_is_never_held_and_a_missing_dependency_holds() -> None:
    needs = spec({"app": "db", "condition": "healthy"}, {"app": "cache"})
    assert waiting_for(needs, True, {}) == []
    assert waiting_for(needs, False, {"db": DependencyState(1, 1, 1)}) == [
        "cache (no such app in namespace default)"
    ]
    assert waiting_for(spec(), False, {}) == []
    assert held_message(["a", "b"]) == "waiting for a, b"


def test_an_app_cannot_depend_on_itself() -> None:
    with pytest.raises(ValueError, match="cannot depend on itself"):
        spec({"app": "api"})


def with_depends(state: AppState, **fields: Any) -> AppState:
    return state.model_copy(update={"spec": state.spec.model_copy(update=fields)})


def test_the_cluster_holds_the_dependant_until_its_dependency_is_ready() -> None:
    cluster = Cluster(seed=0)
    cluster.upsert_node(node_info("n1"), seen=0.0)
    api = with_depends(app_state("api", 2), depends_on=[Dependency(app="db", condition="healthy")])
    cluster.set_app(API, api)
    assert cluster.reconcile(API).placed == []
    assert cluster.held[API] == "waiting for db (no such app in namespace default)"
    status = cluster.status(API)
    assert status is not None
    assert status.message == status.waiting_for == cluster.held[API]

    cluster.set_app(DB, app_state("db", 1))
    placed = cluster.reconcile(DB).placed
    assert len(placed) == 1
    assert cluster.dependants(DB) == {API}
    assert cluster.reconcile(API).placed == []
    assert cluster.held[API] == "waiting for db to be healthy (0/1 ready)"

    cluster.set_ready(DB, {placed[0].id})
    assert len(cluster.reconcile(API).placed) == 2
    assert API not in cluster.held
    assert cluster.dependants(DB) == set()

    # started: the dependency going unready changes nothing any more
    cluster.set_ready(DB, set())
    assert cluster.reconcile(API).placed == []
    assert len(cluster.apps[API].replicas) == 2
