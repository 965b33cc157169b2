"""The scheduler with real agents on one Docker engine: three nodes on 127.0.0.2-4 in
zones a/b/c, the health monitor, mosquitto. Spread over zones, an agent killed with
``kill -9`` (replaced after the lost grace), a drain that never has fewer ready replicas
than desired.

Containers are found and removed by this test's ``shoal.prefix`` label only.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from core.channels import APPS, HEALTH, NODE, NODE_ASSIGN, NODE_INFO
from core.commands import NodeCommand
from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppHealth, AppState, AppVersion
from tests.support.observer import Observer
from tests.support.procs import Broker, Proc, ProcGroup

pytestmark = pytest.mark.e2e

NODES = {"n1": ("127.0.0.2", "a"), "n2": ("127.0.0.3", "b"), "n3": ("127.0.0.4", "c")}
WEB = AppKey("default", "web")


def docker(*args: str) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def containers(prefix: str) -> Counter[str]:
    """Running containers of this test per node label."""
    out = docker(
        "ps", "--filter", f"label=shoal.prefix={prefix}", "--format", '{{.Label "shoal.node"}}'
    )
    return Counter(line for line in out.splitlines() if line)


@pytest.fixture
def cleanup(prefix: str, procs: ProcGroup) -> Iterator[None]:
    yield
    procs.close()  # agents first: none may create a container after the sweep
    ids = docker("ps", "-aq", "--filter", f"label=shoal.prefix={prefix}").split()
    if ids:
        docker("rm", "-f", *ids)


def start_agent(procs: ProcGroup, broker: Broker, prefix: str, node: str) -> Proc:
    address, zone = NODES[node]
    return procs.service(
        "agent",
        broker.url,
        "--node-id",
        node,
        "--address",
        address,
        "--labels",
        f"zone={zone}",
        "--cpus",
        "2",
        "--memory",
        "2Gi",
        prefix=prefix,
        name=f"agent-{node}",
    )


def echo_app(replicas: int) -> AppState:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "shoal-test/echo:v1",
            "replicas": replicas,
            "ports": {"http": 8080},
            "resources": {"cpu": 0.1, "memory": "32Mi"},
            "health": {
                "readiness": {
                    "http": "/healthz",
                    "port": "http",
                    "interval": "300ms",
                    "timeout": "300ms",
                    "failures": 1,
                }
            },
            "placement": {"spread_by": "zone"},
            "termination": {"drain": "200ms", "grace": "2s"},
        }
    )
    return AppState(
        namespace="default",
        name="web",
        revision=1,
        generation=1,
        spec=spec,
        replicas=replicas,
        versions=[AppVersion(revision=1, spec=spec, replicas=replicas)],
    )


def assigned(obs: Observer) -> dict[str, int]:
    return {node: len(a.replicas) for node, a in obs.values(NODE_ASSIGN).items()}


def ready(obs: Observer) -> int:
    health: AppHealth | None = obs.value(HEALTH, WEB)
    return len(health.ready) if health is not None else 0


async def test_spread_node_kill_and_drain_on_docker(
    mosquitto: Broker, prefix: str, procs: ProcGroup, echo_image: str, cleanup: None
) -> None:
    agents = {node: start_agent(procs, mosquitto, prefix, node) for node in NODES}
    procs.service("health", mosquitto.url, prefix=prefix, name="health")
    procs.service(
        "scheduler",
        mosquitto.url,
        "--node-grace",
        "3",
        "--lost-grace",
        "3",
        prefix=prefix,
        name="sched",
    )
    async with Observer(mosquitto.url, prefix) as obs:
        await obs.wait_for(
            lambda: [i.status for i in obs.values(NODE_INFO).values()] == ["ready"] * 3,
            30,
            "3 nodes ready",
        )
        await obs.bus.publish(APPS, echo_app(6))

        # spread over the three zones, every replica ready
        await obs.wait_for(lambda: ready(obs) == 6, 60, "6 replicas ready")
        assert containers(prefix) == {"n1": 2, "n2": 2, "n3": 2}

        # kill -9 one agent, its containers keep running: its replicas stay in rotation
        # (issue 14) until the 3 s lost grace, then move to the others
        agents["n3"].kill()
        await obs.wait_for(lambda: assigned(obs) == {"n1": 3, "n2": 3, "n3": 0}, 15, "moved")
        await obs.wait_for(lambda: ready(obs) >= 6, 60, "6 ready again")
        # the agent comes back: its stale containers are stopped, nothing is doubled
        agents["n3"] = start_agent(procs, mosquitto, prefix, "n3")
        await obs.wait_for(lambda: "n3" not in containers(prefix), 30, "stale replicas gone")
        assert containers(prefix) == {"n1": 3, "n2": 3}

        # drain n1: replacements go to n2/n3 first; ready never drops below desired
        lowest = ready(obs)

        def watch(key: AppKey, health: AppHealth | None) -> None:
            nonlocal lowest
            lowest = min(lowest, ready(obs))

        await obs.bus.subscribe(HEALTH, watch, key=WEB)
        reply = await obs.bus.request(NODE, NodeCommand(node="n1", action="drain"), timeout=5)
        assert reply.ok
        await obs.wait_for(lambda: assigned(obs).get("n1") == 0, 60, "n1 drained")
        await obs.wait_for(lambda: "n1" not in containers(prefix), 30, "n1 containers gone")
        await obs.wait_for(lambda: ready(obs) == 6, 30, "6 ready after the drain")
        assert lowest >= 6
        assert sum(assigned(obs).values()) == 6
