"""Issue 6 under real load: only healthy replicas get traffic and no request is lost."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.load import LoadLoop

pytestmark = pytest.mark.e2e

SPEC = """
name: web
image: shoal-test/echo:v1
replicas: {replicas}
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
env: {{START_DELAY: "{delay}"}}
health:
  readiness: {{http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}}
route: {{host: web.test, path: /, port: http}}
termination: {{drain: 1s, grace: 3s}}
"""


def ready_count(cluster: Cluster) -> int:
    apps = cluster.get_json("apps")
    return int(apps[0]["ready"]) if apps else 0  # type: ignore[call-overload]


def test_docker_kill_under_load_fails_at_most_a_tenth_of_a_percent(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(SPEC.format(replicas=3, delay=0), "--wait")
    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="web.test", workers=4) as load:
        time.sleep(2)
        victim = cluster.containers(app="web")[0]
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        time.sleep(2)
        wait_for(lambda: ready_count(cluster) == 3, 30, message="3 ready again")
        time.sleep(1)
        result = load.stop()
    assert result.total > 500, result
    assert result.failure_rate <= 0.001, (result.failed, result.total, result.errors[:5])


def test_planned_scale_down_fails_no_request(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(SPEC.format(replicas=3, delay=0), "--wait")
    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="web.test", workers=4) as load:
        time.sleep(1)
        cluster.shoal("scale", "web", "2")
        wait_for(
            lambda: len(cluster.containers(app="web", all_states=True)) == 2,
            30,
            message="scaled down to 2 containers",
        )
        time.sleep(1)
        result = load.stop()
    assert result.total > 300, result
    assert result.failed == 0, (result.failed, result.errors[:5])


def test_a_replica_gets_no_traffic_before_it_is_ready(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(SPEC.format(replicas=1, delay=0), "--wait")
    # A second revision whose replicas take 3 s to listen: the balancer must keep sending
    # to the ready one only, so no request fails while they start.
    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="web.test", workers=2) as load:
        cluster.apply_text(SPEC.format(replicas=3, delay=3))
        wait_for(lambda: ready_count(cluster) >= 3, 60, message="3 ready")
        result = load.stop()
    assert result.failed == 0, (result.failed, result.errors[:5])
