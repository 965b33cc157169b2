from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster
from tests.support.procs import Broker, ProcGroup


@pytest.fixture
def cluster(procs: ProcGroup, mosquitto: Broker, echo_image: str) -> Iterator[Cluster]:
    """Controller, scheduler, health, balancer and one agent on real mosquitto + Docker."""
    c = Cluster(procs, mosquitto)
    try:
        yield c
    finally:
        c.close()
