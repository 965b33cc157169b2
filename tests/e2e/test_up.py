"""`shoal up` as a new user runs it: embedded broker, every service, a local agent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.support import pids
from tests.support.cluster import http_get, wait_for
from tests.support.net import free_port
from tests.support.procs import ProcGroup

pytestmark = pytest.mark.e2e

SPEC = """
name: hello
image: shoal-test/echo:v2
replicas: 2
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 300ms, timeout: 500ms, failures: 1}
route: {path: /, port: http}
termination: {drain: 200ms, grace: 2s}
"""


def test_shoal_up_with_embedded_broker_serves_traffic_and_stops_cleanly(
    procs: ProcGroup, echo_image: str
) -> None:
    prefix = f"up{uuid.uuid4().hex[:8]}"
    broker = f"mqtt://127.0.0.1:{free_port()}"
    listen = f"127.0.0.1:{free_port()}"
    dashboard = f"127.0.0.1:{free_port()}"
    env = {"SHOAL_BROKER": broker, "SHOAL_PREFIX": prefix}
    up = procs.spawn(
        "up",
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--listen",
            listen,
            "--admin",
            f"127.0.0.1:{free_port()}",
            "--dashboard",
            dashboard,
            "--data-dir",
            str(procs.workdir / "data"),
            "--node-id",
            "local",
        ],
        env=env,
    )

    def shoal(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            text=True,
            capture_output=True,
            env={**os.environ, **env},
            timeout=120,
        )

    try:
        wait_for(
            lambda: '"ready"' in shoal("get", "nodes", "-o", "json").stdout,
            60,
            message="the local node is ready",
        )
        spec = procs.workdir / "hello.yaml"
        spec.write_text(SPEC)
        applied = shoal("apply", "-f", str(spec), "--wait")
        assert applied.returncode == 0, applied.stderr + up.output()[-3000:]
        names = {http_get(f"http://{listen}/").body for _ in range(12)}
        assert len(names) == 2
        assert all(n.startswith("v2 ") for n in names)
        if os.geteuid() == 0:  # shoal up runs the mesh: containers reach apps by name
            container = docker_ids(prefix)[0]
            call = ["docker", "exec", container, "call", "http://hello:8080/"]
            wait_for(
                lambda: subprocess.run(call, capture_output=True).returncode == 0,
                30,
                message="hello by name from a container",
            )
        assert f"dashboard: http://{dashboard}/" in up.output()
        state = json.loads(http_get(f"http://{dashboard}/api/state").body)
        assert [a["key"] for a in state["apps"]] == ["default/hello"]
        assert shoal("delete", "-f", str(spec)).returncode == 0
        wait_for(lambda: http_get(f"http://{listen}/").status == 404, 30)
    finally:
        code = up.stop(timeout=30)
        clean_up(prefix)
    assert code == 0, up.output()[-3000:]


def docker_ids(prefix: str, *what: str) -> list[str]:
    """Containers (or, with ``what`` = ("network",), networks) of this test's prefix."""
    argv = ["docker", *what, "ls" if what else "ps", "-q"]
    if not what:
        argv.append("-a")
    argv += ["--filter", f"label=shoal.prefix={prefix}"]
    return subprocess.run(argv, capture_output=True, text=True).stdout.split()


def clean_up(prefix: str) -> None:
    """This test's containers and the mesh's networks, by the prefix label."""
    ids = docker_ids(prefix)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    networks = docker_ids(prefix, "network")
    if networks:
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True)


SERVICES = {
    "services.broker",
    "services.controller",
    "services.scheduler",
    "services.agent",
    "services.health",
    "services.balancer",  # the master, which owns the sockets
    "services.balancer.worker",
    "services.scaler",
    "services.dashboard",
} | ({"services.mesh"} if os.geteuid() == 0 else set())  # the mesh needs root


def test_shoal_up_killed_with_sigkill_leaves_no_service_process(
    procs: ProcGroup, docker_engine: None
) -> None:
    """Every process `shoal up` started (the balancer's workers too) goes with it."""
    prefix = f"up{uuid.uuid4().hex[:8]}"
    broker = f"mqtt://127.0.0.1:{free_port()}"
    admin = f"127.0.0.1:{free_port()}"
    env = {"SHOAL_BROKER": broker, "SHOAL_PREFIX": prefix}
    up = procs.spawn(
        "up",
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--admin",
            admin,
            "--dashboard",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(procs.workdir / "data"),
            "--node-id",
            prefix,
        ],
        env=env,
    )

    def ours() -> dict[int, str]:
        # this test's processes, by the prefix in their environment (never by name)
        return {
            pid: module
            for pid, module in pids.with_env("SHOAL_PREFIX", prefix).items()
            if module.startswith("services.") and module != "services.cli"
        }

    def nodes() -> str:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "get", "nodes", "-o", "json"],
            text=True,
            capture_output=True,
            env={**os.environ, **env},
            timeout=60,
        ).stdout

    def balancer_up() -> bool:
        try:
            return bool(json.loads(http_get(f"http://{admin}/healthz").body)["bus"])
        except (OSError, ValueError, KeyError):
            return False

    try:
        wait_for(lambda: set(ours().values()) == SERVICES, 60, message="every service started")
        wait_for(lambda: '"ready"' in nodes(), 60, message="the local node is ready")
        wait_for(balancer_up, 30, message="the balancer serves")
        started = ours()
        assert sorted(started.values()) == sorted(SERVICES), started  # each exactly once
        assert all(pids.alive(pid) for pid in started)

        os.kill(up.pid, signal.SIGKILL)
        assert up.popen is not None
        up.popen.wait(10)

        wait_for(
            lambda: not any(pids.alive(pid) for pid in started) and not ours(),
            40,
            message="every service of the killed `shoal up` gone",
        )
    finally:
        for pid in ours():  # a failed test leaves nothing behind either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        clean_up(prefix)
