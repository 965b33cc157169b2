"""Issue 13, item 2, end to end: the whole cluster over TLS only (mosquitto with a TLS-only
listener that requires client certificates): every service and the CLI connect with the
test CA and a client certificate, an app is applied, placed, probed and served."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.procs import ProcGroup
from tests.support.tls import make_pki, start_tls_mosquitto

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing"),
]

APP = """
name: web
image: shoal-test/echo:v1
replicas: 2
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 300ms, timeout: 500ms, failures: 1}
route: {host: web.test, path: /, port: http}
"""


def test_the_cluster_runs_over_tls_with_client_certificates(
    procs: ProcGroup, echo_image: str, tmp_path: Path
) -> None:
    broker = start_tls_mosquitto(procs, make_pki(tmp_path / "pki"), require_certificate=True)
    assert broker.url.startswith("mqtts://")
    cluster = Cluster(procs, broker)
    try:
        cluster.start()
        out = cluster.apply_text(APP, "--wait", "--wait-timeout", "60").stdout
        assert "app default/web created" in out
        wait_for(lambda: cluster.get("/", host="web.test").status == 200, 20, message="served")
        replicas = {cluster.get("/", host="web.test").body.split()[1] for _ in range(12)}
        assert len(replicas) == 2
    finally:
        cluster.close()
