"""Leader election among instances of one service, from their retained presence (pure).

Every instance publishes ``services/<service>/<instance>`` (retained; its last will says
offline) with a ``leader`` flag. All instances apply the same rule to the same set, so
they agree without talking:

1. leadership is sticky: if online instances claim it, the oldest claimant leads (two
   claimants only exist briefly, after a partition heals; the younger steps down);
2. otherwise the online instance that started first leads (instance name breaks ties).

A new or restarted instance therefore never preempts a running leader. When the leader's
presence goes offline (a clean stop, or its last will after ``kill -9``), the others see
no claimant and the oldest takes over at once. An instance that loses its own broker
connection gives up its claim (the broker has published its last will meanwhile) and
joins the election again once reconnected.
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


def candidates(presences: Iterable[Presence], service: str) -> list[Candidate]:
    """Online instances of ``service`` among the presences."""
    return [
        Candidate(p.started, p.instance, p.leader)
        for p in presences
        if p.service == service and p.status == "online"
    ]


def choose_leader(pool: Iterable[Candidate]) -> str | None:
    """The instance that should lead, or None if there is none."""
    everyone = list(pool)
    claimants = [c for c in everyone if c.leader] or everyone
    best = min(claimants, key=lambda c: (c.started, c.instance), default=None)
    return best.instance if best is not None else None
