"""Recent events kept for later readers: a bounded history, newest last.

Events are not retained on the bus (QoS 0, for people), so a page opened later would see
none; the dashboard keeps the last ``size`` it received and hands them to every page that
connects, then streams new ones.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from core.state import Event

HISTORY = 500


class EventLog:
    def __init__(self, size: int = HISTORY) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self.seq = 0

    def add(self, event: Event, ts: float) -> dict[str, Any]:
        self.seq += 1
        row = {"seq": self.seq, "ts": round(ts, 3), **event.model_dump(mode="json")}
        self._events.append(row)
        return row

    def recent(
        self, namespace: str | None = None, app: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = [e for e in self._events if matches(e, namespace, app)]
        return rows[-limit:] if limit else rows


def matches(event: dict[str, Any], namespace: str | None, app: str | None) -> bool:
    if namespace is not None and event.get("namespace") != namespace:
        return False
    return app is None or event.get("app") == app
