"""Issue 13 item 1, end to end: the whole cluster with authentication on, the generated
ACL and TLS only: every service and agent connects with its own credentials, an admin
applies an app that is placed, probed and served; a user granted `test` is refused in
`prod` and on node commands, with the reason; the scheduler's cordon holds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.auth import make_identities, start_auth_mosquitto
from tests.support.cluster import Cluster, wait_for
from tests.support.procs import ProcGroup
from tests.support.tls import make_pki

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing"),
]

APP = """
name: web
namespace: {ns}
image: shoal-test/echo:v1
replicas: 2
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
health:
  readiness: {{http: /healthz, port: http, interval: 300ms, timeout: 500ms, failures: 1}}
route: {{host: web-{ns}.test, path: /, port: http}}
secrets: [{secrets}]
"""


def test_the_cluster_runs_with_authentication_and_the_generated_acl_over_tls(
    procs: ProcGroup, echo_image: str, tmp_path: Path
) -> None:
    identities = make_identities(
        tmp_path / "auth",
        f"e2eauth{tmp_path.name[-6:].replace('_', '')}",
        nodes=("node-1",),
        users={"alice": {"test": ["*"]}},
    )
    broker = start_auth_mosquitto(procs, identities, make_pki(tmp_path / "pki"))
    assert broker.url.startswith("mqtts://")
    cluster = Cluster(procs, broker, identities=identities)
    try:
        cluster.start()
        # the agent gets its node's secrets with its own credentials
        cluster.shoal("secret", "create", "db-pass", "-n", "prod", "--from-literal", "s3cret")
        prod = APP.format(ns="prod", secrets="db-pass")
        out = cluster.apply_text(prod, "--wait", "--wait-timeout", "60").stdout
        assert "app prod/web created" in out
        wait_for(lambda: cluster.get("/", host="web-prod.test").status == 200, 30, "served")
        [cid, *_] = cluster.containers(app="web")
        read = subprocess.run(
            ["docker", "exec", cid, "cat", "/run/secrets/db-pass"], capture_output=True, text=True
        )
        assert read.stdout == "s3cret"

        cluster.cli_user = "alice"
        refused = cluster.apply_text(prod.replace("v1", "v2"), check=False)
        assert refused.returncode == 1
        assert "not allowed: user 'alice' may not apply in namespace 'prod'" in refused.stderr
        drain = cluster.shoal("node", "drain", "node-1", check=False)
        assert drain.returncode == 1
        assert "not allowed: user 'alice' may not drain on the cluster" in drain.stderr
        secret = cluster.shoal("secret", "rm", "db-pass", "-n", "prod", check=False)
        assert "not allowed: user 'alice' may not secret_rm in namespace 'prod'" in secret.stderr
        test = APP.format(ns="test", secrets="")
        ok = cluster.apply_text(test, "--wait", "--wait-timeout", "60")
        assert "app test/web created" in ok.stdout

        cluster.cli_user = "ops"
        assert "cordoned" in cluster.shoal("node", "cordon", "node-1").stdout
        nodes = cluster.shoal("get", "nodes").stdout
        assert "cordon" in nodes.lower(), nodes
        # the audit trail names the user the broker vouched for
        history = cluster.shoal("rollout", "history", "web", "-n", "prod", "-o", "json").stdout
        assert "by ops" in history, history
        history = cluster.shoal("rollout", "history", "web", "-n", "test", "-o", "json").stdout
        assert "by alice" in history, history
        cluster.cli_user = "alice"
        refused = cluster.shoal("rollout", "history", "web", "-n", "prod", check=False)
        assert "not allowed: user 'alice' may not history in namespace 'prod'" in refused.stderr
    finally:
        cluster.close()
