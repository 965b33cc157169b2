"""Issue 12's "done means" on real Docker: ``tests/e2e/compose_stack`` (front end, API,
key-value store; each tier healthy before the next starts) on three agents with their
meshes. It comes up with ``shoal apply -f``, serves through the balancer (HTTP for the
front end, a TCP route for the store), its containers reach each other by name and alias,
the API gets its secret (created from the file by apply), and it survives a replica kill
and a node loss with at most a handful of failed requests; ``delete -f`` removes it all,
the secret it created included.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.compose_stack import (
    NAMESPACE,
    all_ready,
    apply_until_ready,
    ask_tcp,
    prepare,
    served,
    start_nodes,
    under_load,
)

pytestmark = pytest.mark.e2e


def exec_in(cluster: Cluster, app: str, *argv: str) -> subprocess.CompletedProcess[str]:
    [container, *_] = cluster.containers(app=app)
    return subprocess.run(
        ["docker", "exec", container, *argv], capture_output=True, text=True, timeout=30
    )


def test_three_service_compose_app_comes_up_serves_and_survives(cluster: Cluster) -> None:
    start_nodes(cluster)
    stack = prepare(cluster)
    apply_until_ready(cluster, stack)
    wait_for(lambda: served(cluster), 30, message="front served through the balancer")
    wait_for(lambda: ask_tcp(stack.kv_port, "hi").endswith(" hi"), 30, message="kv over TCP")

    # east-west: names, aliases and container_name, HTTP and TCP
    for argv in (
        ("call", "http://api:8080/"),
        ("call", "http://api.stack:8080/"),
        ("call", "tcp://kv:6379", "hi"),
        ("call", "tcp://store:6379", "hi"),
        ("call", "tcp://stack-kv:6379", "hi"),
    ):
        result = exec_in(cluster, "front", *argv)
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert result.stdout.startswith("v1 "), (argv, result.stdout)
    secret = exec_in(cluster, "api", "cat", "/run/secrets/api-token")
    assert secret.stdout.strip() == "s3cr3t-token", secret

    # apply again: the secret's value is unchanged, nothing rolls
    again = cluster.shoal("apply", "-f", str(stack.compose))
    assert "secret stack/api-token" not in again.stdout, again.stdout
    assert all(
        f"app {NAMESPACE}/{app} unchanged" in again.stdout for app in ("front", "api", "kv")
    ), again.stdout

    killed = under_load(cluster, "replica")
    assert killed.failed <= 8, (killed.failed, killed.total, killed.errors[:5])
    lost = under_load(cluster, "node")
    assert lost.failed <= 8, (lost.failed, lost.total, lost.errors[:5])
    assert all_ready(cluster)
    wait_for(lambda: ask_tcp(stack.kv_port, "again").endswith(" again"), 60, message="kv back")

    deleted = cluster.shoal("delete", "-f", str(stack.compose)).stdout
    assert all(f"app {NAMESPACE}/{app} deleted" in deleted for app in ("front", "api", "kv"))
    assert f"secret {NAMESPACE}/api-token deleted" in deleted  # the file's secret goes too
    wait_for(lambda: cluster.containers(all_states=True) == [], 60, message="containers gone")
    wait_for(lambda: ask_tcp(stack.kv_port) == "", 30, message="kv's TCP listener closed")
