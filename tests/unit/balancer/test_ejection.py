"""Ejected replicas come back on a timer, or earlier on health's word."""

from __future__ import annotations

import time

from core.state import ReplicaHealth
from services.balancer.policy import Ejected


def health(rid: str, ready: bool, since: float, terminating: bool = False) -> ReplicaHealth:
    return ReplicaHealth(
        id=rid,
        revision=1,
        node="n1",
        endpoint="127.0.0.1:1",
        ready=ready,
        since=since,
        terminating=terminating,
    )


def test_a_replica_found_ready_after_its_ejection_is_readmitted() -> None:
    ejected = Ejected()
    ejected.add("a", 60)
    ejected.add("b", 60)
    ejected.add("c", 60)
    at = ejected.at["a"]
    back = ejected.readmit(
        [
            health("a", True, at + 1),  # ready again after the ejection: back now
            health("b", True, at - 1),  # verdict from before the ejection: wait for the timer
            health("c", True, at + 1, terminating=True),  # leaving anyway
        ]
    )
    assert back == ["a"]
    assert "a" not in ejected
    assert "b" in ejected
    assert "c" in ejected


def test_the_timer_still_readmits() -> None:
    ejected = Ejected()
    ejected.add("a", 0.0)
    time.sleep(0.001)
    assert "a" not in ejected
    ejected.purge()
    assert not ejected.at
