"""``get`` on hand-made retained state: every ``-o`` format, selectors, one object, phases."""

from __future__ import annotations

import json

import pytest
import yaml

from core.cluster_state import app_phase
from core.commands import AppResult, Reply
from services.cli.apps import Query, render, reply_lines
from services.cli.views import not_ready_reasons
from tests.unit.cli.models import T0, WEB, app_state, running_snapshot, unplaceable_snapshot

NOW = T0 + 3600


def test_an_unplaceable_app_is_pending_not_stable() -> None:
    snap = unplaceable_snapshot()
    assert app_phase(snap.apps[WEB], snap.placement[WEB]) == "pending"
    assert app_phase(snap.apps[WEB], None) == "stable"
    rolled_back = app_state(phase="rolled_back")
    assert app_phase(rolled_back, snap.placement[WEB]) == "rolled_back"
    text = render(Query("apps", None, None, {}, "table"), snap, NOW)
    assert text is not None
    row = text.splitlines()[1].split()
    assert row[:9] == ["default", "web", "1", "0", "0", "2", "shoal-test/echo:v1", "-", "pending"]
    assert "0/1 nodes fit: 1 insufficient memory" in text
    doc = json.loads(render(Query("apps", None, None, {}, "json"), snap, NOW) or "")
    assert (doc[0]["phase"], doc[0]["updated"]) == ("pending", "2026-05-28T20:26:40.000000Z")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query("apps", None, None, {}, "name"), "app/default/web\n"),
        (Query("apps", None, None, {"tier": "front"}, "name"), "app/default/web\n"),
        (Query("apps", None, None, {"tier": "back"}, "name"), ""),
        (Query("apps", None, "ops", {}, "name"), ""),
        (Query("apps", "web", "default", {}, "name"), "app/default/web\n"),
        (Query("nodes", None, None, {}, "name"), "node/n1\nnode/n2\n"),
        (Query("nodes", None, None, {"zone": "b"}, "name"), "node/n2\n"),
        (Query("nodes", "n1", None, {}, "name"), "node/n1\n"),
        (Query("replicas", None, None, {}, "name"), "replica/web-1\nreplica/web-2\n"),
        (Query("replicas", "web-2", None, {}, "name"), "replica/web-2\n"),
    ],
)
def test_names_selectors_and_one_object(query: Query, expected: str) -> None:
    assert render(query, running_snapshot(), NOW) == expected


@pytest.mark.parametrize(
    "query",
    [
        Query("apps", "nope", "default", {}, "table"),
        Query("apps", "web", "ops", {}, "json"),
        Query("nodes", "n9", None, {}, "yaml"),
        Query("replicas", "web-9", None, {}, "name"),
    ],
)
def test_one_missing_object_is_none(query: Query) -> None:
    assert render(query, running_snapshot(), NOW) is None


@pytest.mark.parametrize("kind", ["apps", "nodes", "replicas"])
def test_json_and_yaml_agree_and_one_object_is_not_a_list(kind: str) -> None:
    snap = running_snapshot()
    as_json = json.loads(render(Query(kind, None, None, {}, "json"), snap, NOW) or "")
    as_yaml = yaml.safe_load(render(Query(kind, None, None, {}, "yaml"), snap, NOW) or "")
    assert as_json == as_yaml
    assert isinstance(as_json, list)
    assert as_json
    name = {"apps": "web", "nodes": "n1", "replicas": "web-1"}[kind]
    one = json.loads(render(Query(kind, name, "default", {}, "json"), snap, NOW) or "")
    assert one == as_json[0]
    # no epoch floats anywhere
    text = json.dumps(as_json)
    assert "1780000000" not in text
    assert "177999" not in text


def test_node_table_has_human_units_and_the_cordon() -> None:
    text = render(Query("nodes", None, None, {}, "table"), running_snapshot(), NOW) or ""
    lines = text.splitlines()
    assert lines[0].split() == [
        "NODE",
        "STATUS",
        "SCHEDULE",
        "REPLICAS",
        "CPU",
        "MEMORY",
        "LABELS",
        "HEARTBEAT",
    ]
    assert lines[1].split() == ["n1", "ready", "-", "2", "1/4", "1Gi/23.5Gi", "zone=a", "1h"]
    assert lines[2].split() == ["n2", "ready", "cordoned", "0", "0/4", "0/23.5Gi", "zone=b", "1h"]
    wide = render(Query("nodes", None, None, {}, "wide"), running_snapshot(), NOW) or ""
    assert wide.splitlines()[0].split()[-2:] == ["ADDRESS", "VERSION"]
    assert wide.splitlines()[1].split()[-2:] == ["10.0.0.1", "0.1.0"]


def test_wide_apps_and_replicas_add_columns() -> None:
    snap = running_snapshot()
    apps = (render(Query("apps", None, None, {}, "wide"), snap, NOW) or "").splitlines()
    assert apps[0].split()[-3:] == ["CPU", "MEMORY", "LABELS"]
    assert apps[1].split()[-3:] == ["0.5", "512Mi", "tier=front"]
    reps = (render(Query("replicas", None, None, {}, "wide"), snap, NOW) or "").splitlines()
    assert reps[0].split()[-2:] == ["CONTAINER", "REASON"]
    assert "readiness: connection refused" in reps[2]
    assert reps[1].split()[-1] == "-"


def test_ages_left_out_for_watch_comparisons() -> None:
    snap = running_snapshot()
    q = Query("nodes", None, None, {}, "table")
    assert render(q, snap, 0.0) == render(q, snap, 0.0)
    assert "1h" not in (render(q, snap, 0.0) or "")


@pytest.mark.parametrize(
    ("change", "dry_run", "line"),
    [
        ("created", False, "app default/web created (revision 1)"),
        ("created", True, "app default/web would be created as revision 1 (dry run)"),
        ("updated", True, "app default/web would be updated (revision 1) (dry run)"),
        ("unchanged", True, "app default/web unchanged (revision 1) (dry run)"),
        ("scaled", False, "app default/web scaled (revision 1)"),
    ],
)
def test_dry_run_lines_differ_from_real_ones(change: str, dry_run: bool, line: str) -> None:
    reply = Reply(
        ok=True,
        results=[AppResult(namespace="default", name="web", revision=1, change=change)],  # type: ignore[arg-type]
    )
    assert reply_lines(reply, dry_run) == [line]


def test_why_an_app_is_not_ready() -> None:
    snap = running_snapshot()
    assert (
        not_ready_reasons(snap.apps[WEB], snap.health[WEB], snap.placement[WEB], snap.replicas())
        == "1/2 replicas of revision 1 ready; "
        "web-2 on n1: not ready (readiness: connection refused)"
    )
    pending = unplaceable_snapshot()
    assert not_ready_reasons(pending.apps[WEB], None, pending.placement[WEB], []) == (
        "0/2 replicas of revision 1 ready; 2 unplaceable: 0/1 nodes fit: 1 insufficient memory"
    )
    assert not_ready_reasons(None, None, None, []) == "not known to the controller yet"


def test_node_json_keeps_the_node_record_and_adds_what_is_assigned() -> None:
    doc = json.loads(render(Query("nodes", "n1", None, {}, "json"), running_snapshot(), NOW) or "")
    assert doc["capacity"]["memory"] == 24683584 * 1024
    assert doc["heartbeat"] == "2026-05-28T20:26:40.000000Z"
    assert doc["heartbeat_interval"] == 2.0
    assert (doc["status"], doc["schedule"], doc["replicas"]) == ("ready", "", 2)
    assert doc["allocated"] == {"cpu": 1.0, "memory": 2**30}
