"""``describe`` on hand-made retained state: conditions name the reasons."""

from __future__ import annotations

from core.commands import RecentEvent
from services.cli.describe import SHOWN_EVENTS, about, app_conditions, describe_text, events_block
from tests.unit.cli.models import T0, WEB, running_snapshot, unplaceable_snapshot

NOW = T0 + 120


def test_describe_of_an_unplaceable_app_names_the_reason() -> None:
    snap = unplaceable_snapshot()
    text = describe_text(snap, "app", "web", "default", NOW) or ""
    assert "Phase:        pending" in text
    scheduled = next(line for line in text.splitlines() if line.strip().startswith("Scheduled"))
    assert scheduled.split()[:3] == ["Scheduled", "False", "Unplaceable"]
    assert "2 of 2 replicas cannot be placed: 0/1 nodes fit: 1 insufficient memory" in scheduled
    assert "Replicas:     <none>" in text
    assert "Updated:      2026-05-28T20:26:40.000000Z (2m ago)" in text
    assert "memory 512Mi" in text


def test_app_conditions_of_a_half_ready_app() -> None:
    snap = running_snapshot()
    conditions = {c.type: c for c in app_conditions(snap.apps[WEB], snap)}
    assert (conditions["Scheduled"].status, conditions["Scheduled"].message) == (True, "2/2 placed")
    assert not conditions["Ready"].status
    assert conditions["Ready"].reason == "ReplicasNotReady"
    assert conditions["Ready"].message == (
        "1/2 replicas of revision 1 ready: readiness: connection refused"
    )
    assert (conditions["Progressing"].status, conditions["Progressing"].reason) == (
        False,
        "stable",
    )
    assert "Autoscaled" not in conditions


def test_describe_app_lists_its_replicas() -> None:
    text = describe_text(running_snapshot(), "app", "web", "default", NOW) or ""
    rows = {line.split()[0]: line.split() for line in text.splitlines() if "web-" in line}
    assert rows["web-1"][:7] == ["web-1", "1", "n1", "running", "yes", "0", "3m30s"]
    assert rows["web-2"][4:6] == ["no", "3"]
    assert "Placed on:    n1=2" in text


def test_describe_node_shows_cordon_capacity_and_replicas() -> None:
    snap = running_snapshot()
    n1 = describe_text(snap, "node", "n1", "default", NOW) or ""
    assert "Schedulable:  yes" in n1
    assert ["memory", "1Gi", "23.5Gi"] in [line.split() for line in n1.splitlines()]
    assert "Assigned:     2 replicas" in n1
    n2 = describe_text(snap, "node", "n2", "default", NOW) or ""
    assert "Schedulable:  no: cordoned (disk swap)" in n2
    assert "Replicas:     <none>" in n2


def test_describe_replica_gives_its_health_verdict() -> None:
    text = describe_text(running_snapshot(), "replica", "web-2", "default", NOW) or ""
    assert "Health:       not ready: readiness: connection refused" in text
    assert "Restarts:     3" in text
    assert "Node:         n1 (ready)" in text


def test_missing_objects_are_none() -> None:
    snap = running_snapshot()
    assert describe_text(snap, "app", "web", "ops", NOW) is None
    assert describe_text(snap, "node", "n9", "default", NOW) is None
    assert describe_text(snap, "replica", "web-9", "default", NOW) is None


def test_describe_of_an_app_waiting_for_its_dependencies() -> None:
    snap = unplaceable_snapshot()
    waiting = "waiting for db to be healthy (0/1 ready)"
    snap.placement[WEB] = snap.placement[WEB].model_copy(
        update={"unplaceable": 0, "message": waiting, "waiting_for": waiting}
    )
    conditions = {c.type: c for c in app_conditions(snap.apps[WEB], snap)}
    scheduled = conditions["Scheduled"]
    assert (scheduled.status, scheduled.reason, scheduled.message) == (
        False,
        "WaitingForDependencies",
        waiting,
    )


def test_describe_lists_the_objects_recent_events() -> None:
    kill = RecentEvent(
        kind="replica_restarted",
        message="replica default.web.1 restarted (restart 1)",
        namespace="default",
        app="web",
        node="n1",
        replica="default.web.1",
        ts=T0 - 30,
    )
    other = RecentEvent(kind="scale", message="x", namespace="prod", app="web", ts=T0)
    assert about(kill, "app", "web", "default")
    assert not about(other, "app", "web", "default")  # another namespace's web
    assert about(kill, "node", "n1", "default")
    assert about(kill, "replica", "default.web.1", "default")
    block = events_block([kill], T0)
    assert block[0] == "Events:"
    assert "replica_restarted" in block[2]
    assert "30s" in block[2]
    many = events_block([kill] * (SHOWN_EVENTS + 5), T0)
    assert len(many) == 2 + SHOWN_EVENTS  # heading, column names, the newest ten
    assert events_block([], T0) == ["Events:       <none>"]
    assert "no dashboard keeps recent events" in events_block(None, T0)[0]
