"""Two regions over two real mosquitto brokers joined by mosquitto's bridge, real Docker.

``eu`` (home: controller, scheduler, health, a balancer ``--region eu``, agents eu-1/eu-2 on
127.0.0.2-3) and ``us`` (a balancer ``--region us``, agents us-1/us-2 on 127.0.0.4-5, on
the second broker, bridged to the first through a link the test cuts). One app of four
replicas with ``placement.regions.min_per_region: 1``:

1. it runs in both regions and each balancer answers from its own region only;
2. the bridge cut, both regions keep serving their local replicas under load (no request
   fails), nothing in ``us`` is stopped, and ``eu`` replaces the cut region's share once
   the scheduler's lost grace has passed;
3. the link back, the stale ``us`` replicas stop, one replica moves back to ``us`` (its
   minimum), and no more replicas than desired are left running.

Containers are found and removed by this test's ``shoal.prefix`` label only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.cluster import wait_for
from tests.support.load import LoadLoop
from tests.support.procs import ProcGroup
from tests.support.regions import APP, HOST, TwoRegions

pytestmark = pytest.mark.e2e


@pytest.fixture
def regions(procs: ProcGroup, prefix: str, echo_image: str) -> Iterator[TwoRegions]:
    two = TwoRegions(procs, prefix, lost_grace=6.0)
    try:
        yield two.start()
    finally:
        two.close()


def only_from(answers: object, region: str) -> bool:
    return answers == {region: 12}


def test_regions_serve_locally_survive_a_cut_and_rejoin_without_duplicates(
    regions: TwoRegions,
) -> None:
    regions.cluster.apply_text(APP, "--wait")
    wait_for(lambda: regions.per_region() == {"eu": 2, "us": 2}, 60, message="2 + 2 running")
    # each balancer answers from its own region (health's verdicts crossed the bridge)
    wait_for(lambda: only_from(regions.answers("eu"), "eu"), 30, message="eu serves locally")
    wait_for(lambda: only_from(regions.answers("us"), "us"), 30, message="us serves locally")
    us_before = {h for h, n in regions.running().items() if n.startswith("us")}

    eu_load = LoadLoop("127.0.0.1", regions.lb_ports["eu"], vhost=HOST, workers=2, body_key=1)
    us_load = LoadLoop("127.0.0.1", regions.lb_ports["us"], vhost=HOST, workers=2, body_key=1)
    with eu_load, us_load:
        wait_for(lambda: us_load.snapshot().ok > 20, 20, message="load through us")
        regions.regions.link.cut()
        cut_at = time.monotonic()
        # the cut region keeps what it runs; the home region replaces its share
        wait_for(lambda: regions.per_region()["eu"] == 4, 60, message="eu replaces us's share")
        replaced_after = time.monotonic() - cut_at
        running = regions.running()
        assert {h for h, n in running.items() if n.startswith("us")} == us_before
        us_cut = us_load.snapshot()
        assert not us_cut.errors, us_cut.errors[:5]
        assert set(us_cut.bodies) >= us_before  # still answered by its own replicas
        wait_for(lambda: only_from(regions.answers("us"), "us"), 10, message="us local in cut")

        regions.regions.link.restore()
        back_at = time.monotonic()
        # the stale replicas of us stop; one moves back to us for its minimum
        wait_for(
            lambda: not us_before & set(regions.running()), 60, message="stale us replicas gone"
        )
        duplicates_for = time.monotonic() - back_at
        wait_for(lambda: regions.per_region() == {"eu": 3, "us": 1}, 60, message="3 + 1")
        wait_for(lambda: only_from(regions.answers("us"), "us"), 30, message="us local again")
        wait_for(lambda: only_from(regions.answers("eu"), "eu"), 30, message="eu local again")
        eu_result, us_result = eu_load.snapshot(), us_load.snapshot()
    print(
        f"regions: share replaced {replaced_after:.1f}s after the cut; stale replicas gone "
        f"{duplicates_for:.1f}s after the link returned; requests failed eu "
        f"{eu_result.failed}/{eu_result.total}, us {us_result.failed}/{us_result.total}"
    )
    assert len(regions.running()) == 4
    assert eu_result.failed == 0, eu_result.errors[:5]
    assert us_result.failed == 0, us_result.errors[:5]
