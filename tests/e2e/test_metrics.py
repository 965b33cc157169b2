"""Issue 15, item 3: every service serves /metrics that Prometheus' own linter accepts.

The whole stack runs on real mosquitto and Docker with one app; each service's metrics
address is read from its presence (as the dashboard's service discovery does), scraped,
and checked with ``promtool check metrics`` (Debian's ``prometheus`` package).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import urllib.request

import pytest

from core.channels import PRESENCE
from core.keys import ServiceKey
from core.state import Presence
from tests.support.cluster import Cluster
from tests.support.observer import Observer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (prometheus) missing"),
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
autoscale: {min: 2, max: 3, target: {rps_per_replica: 1000}}
"""

#: a family each service must have beside the common ones (bus, process, build info)
OWN = {
    "controller": "shoal_app_desired_replicas",
    "scheduler": "shoal_app_placed_replicas",
    "health": "shoal_health_probes_total",
    "balancer": "shoal_lb_requests_total",
    "scaler": "shoal_scaler_desired_replicas",
    "agent": "shoal_agent_replicas",
}
COMMON = (
    "shoal_build_info",
    "shoal_bus_messages_received_total",
    "shoal_bus_connected",
    "shoal_reconciles_total",
    "process_resident_memory_bytes",
)


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return str(resp.read().decode())


async def test_every_service_serves_metrics_promtool_accepts(cluster: Cluster) -> None:
    cluster.start(scaler=True)
    cluster.apply_text(APP, "--wait")
    for _ in range(5):
        assert cluster.get("/", host="web.test").status == 200
    async with Observer(cluster.broker.url, cluster.prefix) as obs:

        def announced() -> dict[ServiceKey, Presence]:
            found = {
                k: p for k, p in obs.values(PRESENCE).items() if p.status == "online" and p.metrics
            }
            return found if set(OWN) <= {k.service for k in found} else {}

        services = await obs.wait_for(announced, 20, "every service announcing /metrics")
    seen: set[str] = set()
    for key, presence in sorted(services.items()):
        assert presence.metrics is not None
        text = await asyncio.to_thread(scrape, presence.metrics)
        lint = await asyncio.to_thread(
            subprocess.run,
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, f"{key}: {lint.stdout}{lint.stderr}"
        for family in (*COMMON, OWN[key.service]):
            assert f"\n{family}" in text, f"{key} has no {family}"
        assert "shoal_build_info{python=" in text
        seen.add(key.service)
    assert seen == set(OWN)
