"""Engine trouble: dockerd stops and starts again under a running agent.

This stops the machine's Docker engine, which kills every container on it: it is marked
``engine_restart`` so it can be scheduled last and alone (``-m engine_restart``), and it
restarts dockerd exactly the way it was started (same command line, same log file).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_agent import Rig, echo_spec, new_replicas, rig  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.engine_restart]

PID_FILE = Path("/var/run/docker.pid")


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout}s")


def can_restart_engine() -> bool:
    return os.geteuid() == 0 and PID_FILE.exists()


class Dockerd:
    """The running dockerd: how it was started, so it can be started the same way."""

    def __init__(self) -> None:
        self.pid = int(PID_FILE.read_text().strip())
        raw = Path(f"/proc/{self.pid}/cmdline").read_bytes().rstrip(b"\0")
        self.argv_text = [a.decode() for a in raw.split(b"\0")]
        try:
            self.log = os.readlink(f"/proc/{self.pid}/fd/1")
        except OSError:
            self.log = "/var/log/dockerd.log"
        if not self.log.startswith("/") or self.log.startswith(("/dev/pts", "pipe:", "socket:")):
            self.log = "/var/log/dockerd.log"

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        wait(lambda: not Path(f"/proc/{self.pid}").exists(), 60, "dockerd exit")

    def start(self) -> None:
        # (nohup dockerd >> LOG 2>&1 &): detached, reparented, outlives the test run.
        subprocess.run(
            ["sh", "-c", 'nohup "$@" >> "$LOG" 2>&1 < /dev/null &', "sh", *self.argv_text],
            env={**os.environ, "LOG": self.log},
            check=True,
            start_new_session=True,  # not in the test's process group: outlives pytest
        )
        wait(engine_answers, 60, "dockerd answering")


async def test_engine_stop_and_start_node_not_ready_then_recovers(rig: Rig) -> None:  # noqa: F811
    if not can_restart_engine():
        pytest.skip("needs root and a dockerd started with a pid file")
    rig.start_agent()
    spec = echo_spec()
    replicas = new_replicas(spec, 2)
    await rig.assign("n1", replicas, spec)
    await rig.wait_phases("n1", [r.id for r in replicas], "running")

    dockerd = Dockerd()
    await asyncio.to_thread(dockerd.stop)
    try:
        info = await rig.wait(
            lambda: (i := rig.info()) is not None and i.status == "not_ready" and i,
            20,
            "node not ready",
        )
        assert "docker engine" in info.reason
    finally:
        if not await asyncio.to_thread(engine_answers):
            await asyncio.to_thread(dockerd.start)

    await rig.wait(lambda: (i := rig.info()) is not None and i.status == "ready", 30, "ready again")
    report = await rig.wait_phases("n1", [r.id for r in replicas], "running", timeout=30)
    boxes = rig.containers("n1")
    assert sorted(c["Config"]["Labels"]["shoal.replica"] for c in boxes) == sorted(
        r.id for r in replicas
    )  # no duplicates
    assert all(s.restarts == 1 for s in report.values())  # the engine stop killed them
    assert rig.procs.procs[-1].alive()
