"""The dashboard in a real browser (Debian's chromium driven by Playwright) on a real cluster.

One cluster, two dashboards: an admin one and one allowed only namespace ``team-a``. The
page loads without a console error; an app applied from the CLI appears without a reload
within 2 s; a ``docker kill`` shows its replica leave and come back; scaling from the page
changes the replicas; an action outside the role is refused on the page. Measured on the way
(printed): bus event -> on screen latency.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from core import codec
from core.channels import EVENTS
from core.state import Event
from tests.support.cluster import Cluster, http_get, wait_for
from tests.support.net import free_port, wait_port

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")

WEB = """
name: web
image: shoal-test/echo:v1
replicas: 2
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 300ms, timeout: 500ms, failures: 1}
route: {host: web.test, path: /, port: http}
termination: {drain: 300ms, grace: 2s}
"""

# Records, on every render, what the page shows of one replica (row there? phase, health).
TRACE_REPLICA = """(id) => {
  window.__trace = [];
  const look = () => {
    const row = document.querySelector(`tr[data-replica="${id}"]`);
    const seen = row ? row.querySelector('[data-testid=phase]').textContent + '|' +
      row.querySelector('[data-testid=health] .phase').textContent : 'absent';
    if (window.__trace[window.__trace.length - 1] !== seen) window.__trace.push(seen);
  };
  new MutationObserver(look).observe(document.getElementById('view'),
    {childList: true, subtree: true, characterData: true});
  look();
}"""

# Records when each token first appears on screen (Date.now(), ms).
WATCH_TOKENS = """(tokens) => {
  window.__seen = {};
  const look = () => {
    const text = document.getElementById('view').textContent;
    for (const t of tokens) {
      if (!(t in window.__seen) && text.includes(t)) window.__seen[t] = Date.now();
    }
  };
  new MutationObserver(look).observe(document.getElementById('view'),
    {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Debian's chromium (SHOAL_TEST_DEPS=1 bash .ci/setup.sh)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
            ],
        )
        try:
            yield b
        finally:
            b.close()


def start_dashboard(cluster: Cluster, *args: str) -> str:
    port = free_port()
    name = f"dashboard-{port}"
    cluster.services[name] = cluster.procs.service(
        "dashboard",
        cluster.broker.url,
        "--listen",
        f"127.0.0.1:{port}",
        *args,
        prefix=cluster.prefix,
        name=name,
    )
    wait_port("127.0.0.1", port, timeout=20)
    return f"http://127.0.0.1:{port}"


def open_page(browser: Any, url: str, errors: list[str]) -> Any:
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)
    return page


def publish_events(cluster: Cluster, tokens: list[str]) -> dict[str, float]:
    """Publish one event per token on the real broker; the wall time (ms) of each publish."""
    import aiomqtt

    async def go() -> dict[str, float]:
        sent: dict[str, float] = {}
        host, port = cluster.broker.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port)) as client:
            for token in tokens:
                event = Event(kind="latency_probe", message=f"probe {token}")
                payload = codec.encode(codec.make(EVENTS.kind, event, src="test/latency"))
                sent[token] = time.time() * 1000
                await client.publish(EVENTS.topic(cluster.prefix, event.kind), payload, qos=0)
                await asyncio.sleep(0.1)
        return sent

    # Playwright's sync API runs an event loop in this thread: publish from another one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result(timeout=30)


def test_dashboard_in_a_browser(cluster: Cluster, browser: Any) -> None:
    cluster.start()
    admin = start_dashboard(cluster)
    team = start_dashboard(cluster, "--namespaces", "team-a")
    errors: list[str] = []
    page = open_page(browser, admin, errors)
    assert "read-only" not in page.text_content("#role")

    # An app applied from the CLI appears without a reload, within 2 s.
    cluster.apply_text(WEB)
    applied = time.monotonic()
    page.wait_for_selector('tr[data-app="default/web"]', timeout=2_000)
    appeared = time.monotonic() - applied
    print(f"\ndashboard: app applied -> on screen in {appeared * 1000:.0f} ms")
    page.wait_for_function(
        "() => document.querySelector('tr[data-app=\"default/web\"] [data-testid=ready]')"
        "?.textContent === '2/2'",
        timeout=60_000,
    )

    # Bus event -> on screen, measured on the events page.
    page.goto(admin + "/#/events")
    page.wait_for_selector('#conn[data-state="live"]')
    tokens = [uuid.uuid4().hex[:12] for _ in range(20)]
    page.evaluate(WATCH_TOKENS, tokens)
    sent = publish_events(cluster, tokens)
    page.wait_for_function(
        "(n) => Object.keys(window.__seen).length === n", arg=len(tokens), timeout=10_000
    )
    seen = page.evaluate("() => window.__seen")
    latencies = sorted(seen[t] - sent[t] for t in tokens)
    print(
        f"dashboard: bus event -> on screen over {len(latencies)} events: "
        f"median {statistics.median(latencies):.0f} ms, max {latencies[-1]:.0f} ms"
    )

    # The app's page: replicas by node, history; a docker kill shows the replica leave
    # and come back.
    page.goto(admin + "/#/app/default/web")
    page.wait_for_selector('[data-app-page="default/web"]')
    page.wait_for_selector('table.history tr[data-revision="1"]', timeout=10_000)
    assert page.locator('[data-group="node-1"] tr[data-replica]').count() == 2
    victim = cluster.containers(app="web")[0]
    replica = subprocess.run(
        ["docker", "inspect", "-f", '{{index .Config.Labels "shoal.replica"}}', victim],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    page.evaluate(TRACE_REPLICA, replica)
    assert page.evaluate("() => window.__trace") == ["running|ready"]
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    page.wait_for_function(
        "() => window.__trace.length > 1 && window.__trace.at(-1) === 'running|ready'",
        timeout=60_000,
    )
    trace = page.evaluate("() => window.__trace")
    assert any(t != "running|ready" for t in trace[1:-1]), trace
    print(f"dashboard: replica {replica} after docker kill: {' -> '.join(trace)}")
    restarts = page.text_content(f'tr[data-replica="{replica}"] [data-testid=restarts]')
    assert restarts is not None
    assert int(restarts) >= 1

    # shoal events prints the recent events the dashboard kept (the kill's among them).
    kept = cluster.shoal("events", "--app", "web").stdout
    assert "default/web" in kept
    assert replica in kept

    # Scaling from the page changes the replicas.
    page.click('button[data-action="scale"]')
    page.fill("#confirm-input", "3")
    page.click("#confirm-ok")
    result = page.wait_for_selector('[data-testid=result][data-ok="true"]', timeout=15_000)
    assert "default/web scaled to 3" in (result.text_content() or "")
    page.wait_for_function(
        "() => document.querySelector('[data-app-page] ~ .card [data-testid=ready]')"
        "?.textContent === '3/3'",
        timeout=60_000,
    )
    wait_for(lambda: len(cluster.containers(app="web")) == 3, 30, message="3 containers")

    # An action outside the dashboard's role is refused on the page, and nothing changes.
    limited = open_page(browser, team + "/#/app/default/web", errors)
    assert "namespaces team-a" in limited.text_content("#role")
    limited.wait_for_selector('[data-app-page="default/web"]')
    limited.click('button[data-action="delete"]')
    limited.click("#confirm-ok")
    refused = limited.wait_for_selector('[data-testid=result][data-ok="false"]', timeout=10_000)
    assert "not in this dashboard's allow-list" in (refused.text_content() or "")
    assert [a["name"] for a in cluster.get_json("apps")] == ["web"]
    assert len(cluster.containers(app="web")) == 3

    # The Prometheus SD endpoint lists every service of the cluster, each with its address.
    groups = json.loads(http_get(admin + "/sd/prometheus").body)
    assert all(set(g) == {"targets", "labels"} and len(g["targets"]) == 1 for g in groups)
    listed = {g["labels"]["service"] for g in groups}
    assert {"controller", "scheduler", "health", "balancer", "agent", "dashboard"} <= listed
    target = next(g["targets"][0] for g in groups if g["labels"]["service"] == "dashboard")
    assert "shoal_build_info" in http_get(f"http://{target}/metrics").body
    assert errors == []
