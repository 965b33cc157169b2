"""Issue 15, item 4: compose.dev.yml really builds (once, with no registry and no network in
the build) and comes up: the dev stack's own balancer serves the demo from 3 replicas.

``.ci/dev-stack.sh`` does the work as an operator would run it (``make dev-stack``); here on
free ports, a prefix and a compose project of the test's own, taken down afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.net import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing"),
]

ROOT = Path(__file__).resolve().parents[2]


def test_dev_stack_builds_once_comes_up_and_serves() -> None:
    tag = uuid.uuid4().hex[:6]
    project, prefix = f"shoal-devtest-{tag}", f"dev{tag}"
    env = {
        **os.environ,
        "DEV_KEEP": "0",
        "SHOAL_DEV_BROKER": str(free_port()),
        "SHOAL_DEV_LISTEN": str(free_port()),
        "SHOAL_DEV_ADMIN": str(free_port()),
        "SHOAL_DEV_PREFIX": prefix,
        "SHOAL_DEV_PROJECT": project,
    }
    try:
        out = subprocess.run(
            ["bash", ".ci/dev-stack.sh"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "dev stack serving: broker controller scheduler agent health balancer scaler" in (
            out.stderr
        )
        assert len({line for line in out.stdout.splitlines() if line.startswith("v1 ")}) == 3
    finally:
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        replicas = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=shoal.prefix={prefix}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if left or replicas:
            subprocess.run(["docker", "rm", "-f", *left, *replicas], capture_output=True)
        subprocess.run(["docker", "volume", "rm", f"{project}_shoal-data"], capture_output=True)
    assert not left, "the stack's containers were left behind"
    assert not replicas, "the demo's replicas were left behind"
