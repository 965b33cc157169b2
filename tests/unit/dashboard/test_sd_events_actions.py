"""Prometheus service discovery from presence, the recent events, and page actions."""

from __future__ import annotations

from typing import Any

import pytest

from core.channels import DELETE, NODE, ROLLBACK, ROLLOUT, SCALE
from core.commands import Reply, RolloutCommand, ScaleCommand
from core.keys import ServiceKey
from core.state import Event, Presence
from services.dashboard import actions, sd
from services.dashboard.events import EventLog


def test_sd_lists_every_live_instance_with_a_metrics_address() -> None:
    presence = {
        ServiceKey("scheduler", "s1"): Presence(
            service="scheduler", instance="s1", host="m1", metrics="10.0.0.1:9101"
        ),
        ServiceKey("agent", "a1"): Presence(
            service="agent", instance="a1", host="m2", metrics="10.0.0.2:9102"
        ),
        ServiceKey("agent", "gone"): Presence(
            service="agent", instance="gone", status="offline", metrics="10.0.0.3:9102"
        ),
        ServiceKey("health", "h1"): Presence(service="health", instance="h1"),
    }
    assert sd.targets(presence) == [
        {
            "targets": ["10.0.0.2:9102"],
            "labels": {"service": "agent", "instance": "a1", "node": "m2"},
        },
        {
            "targets": ["10.0.0.1:9101"],
            "labels": {"service": "scheduler", "instance": "s1", "node": "m1"},
        },
    ]


def test_event_log_is_bounded_and_filters_by_app() -> None:
    log = EventLog(size=3)
    for i in range(5):
        log.add(Event(kind="k", message=f"m{i}", namespace="default", app=f"a{i % 2}"), 10.0 + i)
    assert [e.message for e in log.recent()] == ["m2", "m3", "m4"]
    assert [e.message for e in log.recent("default", "a0")] == ["m2", "m4"]
    assert [e.message for e in log.recent(limit=1)] == ["m4"]
    assert log.recent("other") == []
    assert [(e.seq, e.ts) for e in log.recent()] == [(3, 12.0), (4, 13.0), (5, 14.0)]
    log.add(Event(kind="k", message="no namespace", app="a0"), 20.0)
    assert log.recent("default", "a0")[-1].message == "no namespace"


@pytest.mark.parametrize(
    ("data", "command", "namespace"),
    [
        ({"action": "scale", "name": "web", "replicas": 3}, SCALE, "default"),
        ({"action": "undo", "namespace": "prod", "name": "web"}, ROLLBACK, "prod"),
        ({"action": "promote", "name": "web"}, ROLLOUT, "default"),
        ({"action": "abort", "name": "web"}, ROLLOUT, "default"),
        ({"action": "delete", "name": "web"}, DELETE, "default"),
        ({"action": "drain", "node": "n1"}, NODE, None),
        ({"action": "uncordon", "node": "n1"}, NODE, None),
    ],
)
def test_actions_are_the_cli_commands(
    data: dict[str, Any], command: Any, namespace: str | None
) -> None:
    act = actions.parse(data)
    assert act.command is command
    assert act.namespace == namespace
    assert isinstance(act.body, command.model)


def test_action_bodies() -> None:
    scale = actions.parse({"action": "scale", "name": "web", "replicas": 3})
    assert scale.body == ScaleCommand(name="web", replicas=3, source="manual")
    abort = actions.parse({"action": "abort", "name": "web"})
    assert abort.body == RolloutCommand(name="web", action="abort")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        ({"action": "scale", "name": "web"}, "whole number"),
        ({"action": "scale", "name": "web", "replicas": True}, "whole number"),
        ({"action": "scale", "name": "web", "replicas": -1}, "scale"),
        ({"action": "delete"}, "'name'"),
        ({"action": "cordon"}, "'node'"),
        ({"action": "reboot", "name": "x"}, "unknown action"),
        ({"action": "scale", "name": "Bad_Name", "replicas": 1}, "name"),
    ],
)
def test_bad_actions_are_refused_before_sending(data: Any, message: str) -> None:
    with pytest.raises(actions.ActionError, match=message):
        actions.parse(data)


def test_results_say_what_happened() -> None:
    act = actions.parse({"action": "scale", "name": "web", "replicas": 3})
    assert act.result(Reply(ok=True, revision=4)) == {
        "ok": True,
        "message": "default/web scaled to 3 (revision 4)",
        "errors": [],
    }
    refused = act.result(Reply(ok=False, errors=["replicas: above autoscale.max 2"]))
    assert refused["ok"] is False
    assert refused["errors"] == ["replicas: above autoscale.max 2"]
