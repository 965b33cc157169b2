"""Issue 3, end to end: desired state in, traffic out, on real mosquitto and real Docker."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.support.cluster import Cluster, wait_for

pytestmark = pytest.mark.e2e

ECHO = """
name: echo
image: shoal-test/echo:v1
replicas: {replicas}
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
health:
  readiness: {{http: /healthz, port: http, interval: 300ms, timeout: 500ms, failures: 1}}
route: {{host: echo.test, path: /, port: http}}
termination: {{drain: 500ms, grace: 3s}}
"""


def hostnames_through_balancer(cluster: Cluster, n: int = 30) -> set[str]:
    names = set()
    for _ in range(n):
        r = cluster.get("/", host="echo.test")
        assert r.status == 200, r
        version, hostname = r.body.split()
        assert version == "v1"
        names.add(hostname)
    return names


def test_apply_kill_invalid_delete(cluster: Cluster) -> None:
    cluster.start()
    out = cluster.apply_text(ECHO.format(replicas=3), "--wait").stdout
    assert "app default/echo created (revision 1)" in out
    assert len(cluster.containers(app="echo")) == 3

    # Through the balancer, every replica answers.
    assert len(hostnames_through_balancer(cluster)) == 3
    assert cluster.get("/", host="unknown.test").status == 404

    # docker kill one container: a replacement runs and requests succeed again.
    victim = cluster.containers(app="echo")[0]
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    wait_for(lambda: len(hostnames_through_balancer(cluster, 12)) >= 1, 20)

    def three_ready() -> bool:
        apps = cluster.get_json("apps")
        return bool(apps) and apps[0]["ready"] == 3

    wait_for(three_ready, 30, message="3 replicas ready again")
    assert len(hostnames_through_balancer(cluster)) == 3

    # An invalid spec is refused with the errors, and the running app is untouched.
    before = sorted(cluster.containers(app="echo"))
    bad = cluster.apply_text(
        ECHO.format(replicas=3).replace("memory: 32Mi", "memory: lots"), check=False
    )
    assert bad.returncode == 1
    assert "resources.memory: invalid memory size 'lots'" in bad.stderr
    assert "nothing was changed" in bad.stderr
    (app,) = cluster.get_json("apps")
    assert app["revision"] == 1
    assert sorted(cluster.containers(app="echo")) == before

    # delete removes every container.
    cluster.shoal("delete", "app", "echo")
    wait_for(lambda: not cluster.containers(all_states=True), 30, message="containers gone")
    assert cluster.get_json("apps") == []
    assert cluster.get("/", host="echo.test").status == 404


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto-clients")
def test_json_desired_state_event_from_mosquitto_pub(cluster: Cluster) -> None:
    cluster.start()
    cluster.wait_serving()  # mosquitto_pub without reply_to: nobody would say it was lost
    spec = {
        "name": "plain",
        "image": "shoal-test/echo:v1",
        "replicas": 2,
        "resources": {"cpu": 0.05, "memory": "32Mi"},
        "ports": {"http": 8080},
        "route": {"host": "plain.test", "port": "http"},
    }
    event = {"kind": "apply", "body": {"apps": [spec]}}
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            cluster.broker.host,
            "-p",
            str(cluster.broker.port),
            "-q",
            "1",
            "-t",
            f"{cluster.prefix}/cmd/apply",
            "-m",
            json.dumps(event),
        ],
        check=True,
    )

    def both_answer() -> bool:
        names = set()
        for _ in range(12):
            r = cluster.get("/", host="plain.test")
            if r.status != 200:
                return False
            names.add(r.body.split()[1])
        return len(names) == 2

    wait_for(both_answer, 60, message="2 replicas answering through the balancer")
    (app,) = cluster.get_json("apps")
    assert app["name"] == "plain"
    assert app["revision"] == 1
