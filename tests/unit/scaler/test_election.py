"""Leader election among scaler instances (pure)."""

from __future__ import annotations

import pytest

from core.state import Presence
from services.scaler.election import Candidate, candidates, choose_leader


@pytest.mark.parametrize(
    ("pool", "leader"),
    [
        ([], None),
        ([Candidate(5, "b"), Candidate(3, "a")], "a"),
        ([Candidate(3, "b"), Candidate(3, "a")], "a"),  # name breaks ties
        ([Candidate(1, "old"), Candidate(9, "new", leader=True)], "new"),  # sticky
        ([Candidate(4, "x", True), Candidate(2, "y", True)], "y"),  # oldest claimant
    ],
)
def test_choose_leader(pool: list[Candidate], leader: str | None) -> None:
    assert choose_leader(pool) == leader


def test_only_online_instances_of_the_service_are_candidates() -> None:
    presences = [
        Presence(service="scaler", instance="a", started=1),
        Presence(service="scaler", instance="b", started=0, status="offline"),
        Presence(service="health", instance="c", started=0),
    ]
    assert candidates(presences) == [Candidate(1, "a")]
