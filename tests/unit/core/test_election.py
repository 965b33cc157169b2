"""Leader election among instances of one service (scheduler, scaler), pure."""

from __future__ import annotations

from core.election import Candidate, candidates, choose_leader
from core.state import Presence


def presence(
    instance: str, started: float, status: str = "online", leader: bool = False
) -> Presence:
    return Presence(
        service="scheduler",
        instance=instance,
        started=started,
        status=status,  # type: ignore[arg-type]
        leader=leader,
    )


def test_the_oldest_online_instance_leads() -> None:
    pool = candidates(
        [presence("b", 2.0), presence("a", 1.0, "offline"), presence("c", 3.0)], "scheduler"
    )
    assert choose_leader(pool) == "b"


def test_leadership_is_sticky() -> None:
    # "a" restarted (it is older by name only) while "b" leads: "b" keeps leading
    pool = candidates([presence("b", 5.0, leader=True), presence("a", 1.0)], "scheduler")
    assert choose_leader(pool) == "b"


def test_two_claimants_the_oldest_keeps_it() -> None:
    pool = candidates(
        [presence("b", 5.0, leader=True), presence("a", 1.0, leader=True)], "scheduler"
    )
    assert choose_leader(pool) == "a"


def test_an_offline_leader_does_not_count() -> None:
    pool = candidates([presence("a", 1.0, "offline", leader=True), presence("b", 2.0)], "scheduler")
    assert choose_leader(pool) == "b"


def test_ties_break_on_the_instance_name() -> None:
    assert choose_leader([Candidate(1.0, "y"), Candidate(1.0, "x")]) == "x"


def test_no_candidates_no_leader() -> None:
    assert choose_leader([]) is None


def test_other_services_do_not_take_part() -> None:
    other = Presence(service="controller", instance="z", started=0.0)
    assert candidates([other, presence("a", 5.0)], "scheduler") == [Candidate(5.0, "a")]
