"""A second controller started with an empty store changes nothing that is running: on
real mosquitto and Docker, with the scheduler, health, balancer and an agent. Neither as a
standby nor once it leads (the first one killed) does it clear a retained app; the
scheduler keeps its assignments, no container is replaced, traffic still flows."""

from __future__ import annotations

import pytest

from core.channels import APPS, NODE_ASSIGN, PRESENCE, SCALE
from core.commands import Reply, ScaleCommand
from tests.support.cluster import Cluster
from tests.support.observer import Observer
from tests.support.procs import Proc

pytestmark = pytest.mark.e2e

ECHO = """
name: echo
image: shoal-test/echo:v1
replicas: 2
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 300ms, timeout: 500ms, failures: 1}
route: {host: echo.test, path: /, port: http}
"""


def presence(obs: Observer, proc: Proc) -> object:
    for p in obs.values(PRESENCE, service="controller").values():
        if p.pid == proc.pid and p.status == "online":
            return p
    return None


def assigned(obs: Observer) -> set[str]:
    return {r.id for a in obs.values(NODE_ASSIGN).values() for r in a.replicas}


async def test_a_second_controller_on_an_empty_store_changes_nothing_running(
    cluster: Cluster,
) -> None:
    cluster.start()
    cluster.apply_text(ECHO, "--wait")
    containers = set(cluster.containers(app="echo"))
    assert len(containers) == 2
    async with Observer(cluster.broker.url, cluster.prefix) as obs:
        apps = await obs.wait_for(lambda: obs.values(APPS), 10, "the app retained")
        replicas = await obs.wait_for(lambda: len(assigned(obs)) == 2 and assigned(obs), 10)

        second = cluster.procs.service(
            "controller",
            cluster.broker.url,
            "--data-dir",
            str(cluster.procs.workdir / "empty"),
            "--instance",
            "second",
            prefix=cluster.prefix,
            name="controller-2",
        )
        await obs.wait_for(lambda: presence(obs, second), 20, "the second controller online")
        answer = await obs.bus.request(SCALE, ScaleCommand(name="echo", replicas=2), timeout=10)
        assert isinstance(answer, Reply)
        assert answer.ok  # answered by the first controller: nothing changed
        await obs.bus.sync()
        assert obs.values(APPS) == apps

        cluster.services["controller"].kill()
        await obs.wait_for(
            lambda: getattr(presence(obs, second), "leader", False), 5, "the second one leads"
        )
        await obs.wait_for(lambda: "republished apps" in second.output(), 15, "it republished")
        await obs.bus.sync()
        assert obs.values(APPS) == apps
        assert assigned(obs) == replicas
    assert set(cluster.containers(app="echo")) == containers
    assert cluster.get("/", host="echo.test").status == 200
