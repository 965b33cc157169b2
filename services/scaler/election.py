"""Which scaler instance acts, from the instances' retained presence (pure).

Same rule as the scheduler's (services share nothing but the bus, so it is restated here):
every instance publishes ``services/scaler/<instance>`` (retained, last will: offline) with
a ``leader`` flag, and all apply the same rule to the same set:

1. leadership is sticky: among online instances that claim it, the oldest leads;
2. otherwise the online instance that started first leads (instance name breaks ties).

A new instance never preempts a running leader; when the leader goes offline (clean stop or
last will) the oldest remaining one takes over. Standbys keep evaluating, so they take over
with a warm stabilisation window, but send no command and write no status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.state import Presence

__all__ = ["Candidate", "candidates", "choose_leader"]


@dataclass(frozen=True, slots=True)
class Candidate:
    started: float
    instance: str
    leader: bool = False


def candidates(presences: Iterable[Presence], service: str = "scaler") -> list[Candidate]:
    """Online instances of ``service`` among the presences."""
    return [
        Candidate(p.started, p.instance, p.leader)
        for p in presences
        if p.service == service and p.status == "online"
    ]


def choose_leader(pool: Iterable[Candidate]) -> str | None:
    """The instance that should act, or None if there is none."""
    everyone = list(pool)
    claimants = [c for c in everyone if c.leader] or everyone
    best = min(claimants, key=lambda c: (c.started, c.instance), default=None)
    return best.instance if best is not None else None
