"""Recent events kept for later readers: a bounded history, newest last.

Events are not retained on the bus (QoS 0, for people), so a page opened later would see
none; the dashboard keeps the last ``size`` it received, hands them to every page that
connects, and answers ``cmd/events`` (``shoal events``) with them.
"""

from __future__ import annotations

from collections import deque

from core.commands import RecentEvent
from core.state import Event

HISTORY = 500


class EventLog:
    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self._events: deque[RecentEvent] = deque(maxlen=size)
        self.seq = 0

    def add(self, event: Event, ts: float) -> RecentEvent:
        self.seq += 1
        kept = RecentEvent(**event.model_dump(), ts=round(ts, 3), seq=self.seq)
        self._events.append(kept)
        return kept

    def recent(
        self, namespace: str | None = None, app: str | None = None, limit: int | None = None
    ) -> list[RecentEvent]:
        rows = [e for e in self._events if matches(e, namespace, app)]
        return rows[-limit:] if limit else rows


def matches(event: Event, namespace: str | None, app: str | None) -> bool:
    if namespace is not None and (event.namespace or "default") != namespace:
        return False
    return app is None or event.app == app
