"""``shoal events``: one line per event, filters, and the history/live overlap."""

from __future__ import annotations

import pytest

from core.commands import RecentEvent
from core.state import Event
from services.cli.events import event_line, event_object, matches, same


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (Event(kind="k", message="m", app="web"), "default/web"),
        (Event(kind="k", message="m", namespace="prod", app="web", replica="r1"), "prod/web r1"),
        (Event(kind="k", message="m", node="n1"), "node/n1"),
        (Event(kind="k", message="m"), "-"),
    ],
)
def test_event_object(event: Event, text: str) -> None:
    assert event_object(event) == text


def test_event_line() -> None:
    event = Event(kind="replica_exited", message="exit 137", app="web", severity="warning")
    line = event_line(event, 0.0)
    assert line.startswith("1970-01-01T00:00:00.000000Z  warning  replica_exited")
    assert line.endswith("default/web" + " " * 21 + "  exit 137")


@pytest.mark.parametrize(
    ("namespace", "app", "shown"),
    [(None, None, True), ("default", None, True), ("prod", None, False), (None, "db", False)],
)
def test_matches(namespace: str | None, app: str | None, shown: bool) -> None:
    assert matches(Event(kind="k", message="m", app="web"), namespace, app) is shown


def test_an_event_in_the_history_and_live_is_the_same() -> None:
    event = Event(kind="k", message="m", app="web")
    kept = RecentEvent(**event.model_dump(), ts=5.0, seq=3)
    assert same(kept, event)
    assert not same(kept, Event(kind="k", message="other", app="web"))
