"""Issue 13 (admission, hardening) on a real cluster: a privileged spec and a spec mounting
``/`` are refused by ``shoal apply`` and nothing changes (same revision, same containers);
the running container has its memory limit, pids limit and log rotation."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.e2e

SPEC = """
name: web
image: shoal-test/echo:{version}
replicas: 1
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
route: {{host: web.test, port: http}}
{extra}
"""


def hint(rule: str) -> str:
    return f"refused by policy '{rule}' (allow it for namespace default in the policy file)"


def test_refused_specs_change_nothing_and_containers_are_hardened(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(SPEC.format(version="v1", extra=""), "--wait")
    before = sorted(cluster.containers(app="web"))
    assert len(before) == 1

    cases = [
        (
            "security: {privileged: true}",
            [f"default/web: security.privileged: {hint('privileged')}"],
        ),
        (
            "volumes: [{source: /, target: /host}]",
            [
                f"default/web: volumes[0].source: host path /: {hint('bind_mounts')}",
                "default/web: volumes[0].source: / holds the Docker socket: "
                + hint("docker_socket"),
            ],
        ),
    ]
    for extra, lines in cases:
        refused = cluster.apply_text(SPEC.format(version="v2", extra=extra), check=False)
        assert refused.returncode != 0, refused
        for line in lines:
            assert line in refused.stdout + refused.stderr, refused

    [app] = cluster.get_json("apps")
    assert (app["name"], app["revision"]) == ("web", 1)
    assert sorted(cluster.containers(app="web")) == before
    assert cluster.get("/", host="web.test").status == 200

    [inspect] = json.loads(
        subprocess.run(
            ["docker", "inspect", before[0]], capture_output=True, text=True, check=True
        ).stdout
    )
    host = inspect["HostConfig"]
    assert (host["Privileged"], host["Memory"], host["PidsLimit"]) == (False, 32 * 1024**2, 4096)
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "3", "max-size": "10m"},
    }
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
