"""Engine trouble: dockerd stops and starts again under a running agent.

This stops the machine's Docker engine, which kills every container on it: it is marked
``engine_restart`` so it can be scheduled last and alone (``-m engine_restart``), and it
restarts dockerd exactly the way it was started (same command line, same log file).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.test_agent import Rig, echo_spec, new_replicas, rig  # noqa: F401
from tests.support.dockerd import Dockerd, can_restart_engine, engine_answers

pytestmark = [pytest.mark.e2e, pytest.mark.engine_restart]


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
