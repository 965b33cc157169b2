"""Admission through the real controller process on mosquitto: the default policy refuses
a privileged spec, a bind of ``/`` and the Docker socket, leaving the retained state and
the history as they were; a policy file allows one namespace and not another; a route
host of another namespace is refused naming its app."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.channels import APPS
from core.commands import History
from core.keys import AppKey
from tests.integration.test_controller import (
    app,
    observing,
    reply,
    request,
    state,
    until,
    wait_online,
)
from tests.integration.test_controller_cli import shoal
from tests.support.procs import Broker, ProcGroup

pytestmark = pytest.mark.integration

POLICY = """
namespaces:
  ops:
    privileged: true
    bind_mounts: [/var/log]
"""


def refusal(ns: str, where: str, what: str, rule: str) -> str:
    return (
        f"{ns}/web: {where}: {what}refused by policy '{rule}' "
        f"(allow it for namespace {ns} in the policy file)"
    )


async def test_refused_specs_change_nothing_and_the_policy_allows_one_namespace(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    controller = procs.service(
        "controller",
        mosquitto.url,
        "--data-dir",
        str(tmp_path / "data"),
        "--policy",
        str(policy),
        prefix=prefix,
    )
    async with observing(mosquitto, prefix) as obs:
        await wait_online(obs, controller)
        for ns in ("default", "ops"):
            route = {"host": f"web.{ns}.test", "port": "http"}
            ok = await reply(obs, "apply", {"apps": [{**app(), "namespace": ns, "route": route}]})
            assert ok.ok, ok.errors
        await until(obs, lambda: len(obs.values(APPS)) == 2, "both apps published")
        before = obs.values(APPS)

        privileged = {**app(image="shoal-test/echo:v2"), "security": {"privileged": True}}
        root = {**app(image="shoal-test/echo:v2"), "volumes": [{"source": "/", "target": "/h"}]}
        socket = {
            **app(image="shoal-test/echo:v2"),
            "volumes": [{"source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}],
        }
        cases = [
            (privileged, [refusal("default", "security.privileged", "", "privileged")]),
            (
                root,
                [
                    refusal("default", "volumes[0].source", "host path /: ", "bind_mounts"),
                    refusal(
                        "default",
                        "volumes[0].source",
                        "/ holds the Docker socket: ",
                        "docker_socket",
                    ),
                ],
            ),
            (
                socket,
                [
                    refusal(
                        "default",
                        "volumes[0].source",
                        "host path /var/run/docker.sock: ",
                        "bind_mounts",
                    ),
                    refusal(
                        "default",
                        "volumes[0].source",
                        "/var/run/docker.sock holds the Docker socket: ",
                        "docker_socket",
                    ),
                ],
            ),
        ]
        for spec, errors in cases:
            for dry_run in (True, False):
                refused = await reply(obs, "apply", {"apps": [spec], "dry_run": dry_run})
                assert (refused.ok, refused.errors, refused.results) == (False, errors, [])
        # the ops namespace may run privileged and bind /var/log, not /
        allowed = {
            **privileged,
            "namespace": "ops",
            "route": {"host": "web.ops.test", "port": "http"},
            "volumes": [{"source": "/var/log", "target": "/l"}],
        }
        ok = await reply(obs, "apply", {"apps": [allowed]})
        assert ok.ok, ok.errors
        assert [(r.namespace, r.revision, r.change) for r in ok.results] == [("ops", 2, "updated")]
        not_root = await reply(obs, "apply", {"apps": [{**allowed, "volumes": root["volumes"]}]})
        assert not_root.errors[0] == refusal(
            "ops", "volumes[0].source", "host path /: ", "bind_mounts"
        )

        await until(obs, lambda: (s := state(obs, ns="ops")) and s.revision == 2, "ops updated")
        await obs.bus.sync()
        assert state(obs) == before[AppKey("default", "web")]  # default/web as it was
        env = await request(obs, "history", {"name": "web"})
        assert [r.revision for r in env.open(History).revisions] == [1]


async def test_a_route_host_of_another_namespace_is_refused(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    controller = procs.service(
        "controller", mosquitto.url, "--data-dir", str(tmp_path), prefix=prefix
    )
    async with observing(mosquitto, prefix) as obs:
        await wait_online(obs, controller)
        assert (await reply(obs, "apply", {"apps": [{**app(), "namespace": "prod"}]})).ok
        await until(obs, lambda: state(obs, ns="prod"), "prod/web published")
        evil = {**app("evil"), "namespace": "aaa", "route": {"host": "web.test", "port": "http"}}
        refused = await reply(obs, "apply", {"apps": [evil]})
        assert refused.errors == [
            "aaa/evil: route.host: 'web.test' already used by app prod/web of namespace prod: "
            "a host belongs to one namespace"
        ]
        await obs.bus.sync()
        assert state(obs, "evil", "aaa") is None


async def test_the_cli_shows_each_refusal_and_changes_nothing(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    spec = tmp_path / "web.yaml"
    spec.write_text(
        "name: web\nimage: shoal-test/echo:v1\n"
        "security: {privileged: true, cap_add: [SYS_ADMIN]}\n"
        "volumes: [{source: /, target: /host}]\n"
    )
    controller = procs.service(
        "controller", mosquitto.url, "--data-dir", str(tmp_path), prefix=prefix
    )
    async with observing(mosquitto, prefix) as obs:
        await wait_online(obs, controller)
        lines = [
            refusal("default", "security.privileged", "", "privileged"),
            refusal("default", "security.cap_add[0]", "SYS_ADMIN: ", "capabilities"),
            refusal("default", "volumes[0].source", "host path /: ", "bind_mounts"),
            refusal("default", "volumes[0].source", "/ holds the Docker socket: ", "docker_socket"),
        ]
        for args in (["apply", "-f"], ["apply", "--dry-run", "-f"], ["diff", "-f"]):
            run = await shoal(mosquitto, prefix, *args, str(spec))
            assert run.code != 0, (args, run)
            for line in lines:
                assert line in run.err + run.out, (args, run)
        await obs.bus.sync()
        assert state(obs) is None
